//! A saturated store writer commits through the write-ahead log (`node/src/store/writer.rs`),
//! as it does at any load: with hundreds of publishes in flight on many topics, each batch is
//! one sequential fsync of the log, and a checkpoint (a durable redb commit that empties the
//! log) follows every time the log has grown to its limit. A `kill -9` after several of them
//! must lose no acknowledged event: the restarted node replays the log and holds every one, at
//! its place in a gap-free chain, and goes on after it without a conflict. A kill that lands
//! just after a checkpoint finds the log empty; the burst and kill are then repeated (up to
//! ten rounds, each checked the same way) until one cuts a log with records to replay.

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

/// Kill rounds at most: a kill can land just after a checkpoint emptied the log (the log is
/// reset every 256 KiB, a few dozen times a second here), and the restart then has nothing to
/// replay. Each round checks that nothing acknowledged was lost; the test needs one round whose
/// kill cut a log with records in it.
const ROUNDS: usize = 10;

#[test]
fn kill_9_while_the_writer_is_saturated_loses_no_acknowledged_event() -> Result<()> {
    let _heavy = tidings_tests::one_heavy_test_at_a_time();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("n");
    let rt = tokio::runtime::Runtime::new()?;
    // Every acknowledged event of every round: (topic, seq, cid).
    let mut acked: Vec<(String, u64, String)> = Vec::new();
    for round in 0..ROUNDS {
        let node = NodeProcess::start(&data, &[])?;
        burst_and_kill(&rt, node, round, &mut acked)?;
        let node = NodeProcess::start(&data, &[])?;
        // Did the kill cut a writer that was on the log, with records to replay?
        let replayed = node.log().contains("replayed the write-ahead log");
        check_chains(&node, &mut acked, round)?;
        if replayed {
            return Ok(());
        }
        eprintln!("round {round}: the kill landed on an empty log (just checkpointed); again");
    }
    bail!("none of {ROUNDS} kills cut a log with records to replay")
}

/// Publishes a burst over [`TOPICS`] with hundreds in flight, and kills `node` once the writer
/// has made [`CHECKPOINTS`] checkpoints and 2,000 more events were acknowledged; adds what was
/// acknowledged to `acked`.
fn burst_and_kill(
    rt: &tokio::runtime::Runtime,
    mut node: NodeProcess,
    round: usize,
    acked: &mut Vec<(String, u64, String)>,
) -> Result<()> {
    let metrics = node.api();
    let api = node.api.clone();
    let (tx, rx) = std::sync::mpsc::channel::<(String, u64, String)>();
    let sender = rt.spawn(async move {
        let stream = Client::new(&api, None).publish_stream().await?;
        let mut pending = Vec::new();
        for k in 0..EVENTS {
            let t = topic(k);
            let body = json!({ "round": round, "k": k }).to_string();
            let Ok(answer) = stream.send(&t, &body).await else {
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
    let mut this_round = 0usize;
    let mut checkpointed_at = None;
    let mut checkpoints = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => acked.push(a),
            Err(_) => bail!("round {round}: {this_round} acknowledged, then none for 30 s"),
        }
        this_round += 1;
        if checkpointed_at.is_none() && this_round.is_multiple_of(500) {
            checkpoints = metrics
                .metric("tidings_store_checkpoints_total")
                .unwrap_or(0);
            if checkpoints >= CHECKPOINTS {
                checkpointed_at = Some(this_round);
            }
        }
        if let Some(at) = checkpointed_at
            && this_round >= at + 2_000
        {
            break;
        }
        ensure!(
            Instant::now() < deadline && this_round < EVENTS as usize - 1_000,
            "round {round}: the writer made {checkpoints} checkpoints, not {CHECKPOINTS} ({this_round} acknowledged in the burst); log:\n{}",
            node.log()
        );
    }
    node.kill();
    let _ = rt.block_on(sender);
    acked.extend(rx.try_iter());
    eprintln!(
        "round {round}: {CHECKPOINTS} checkpoints after {} acknowledged; killed with {} acknowledged in all",
        checkpointed_at.unwrap_or(0),
        acked.len()
    );
    Ok(())
}

/// Every event in `acked` is at its place in its topic's chain on the restarted `node`, and
/// each topic goes on right after its chain without a conflict (that publish joins `acked`).
fn check_chains(
    node: &NodeProcess,
    acked: &mut Vec<(String, u64, String)>,
    round: usize,
) -> Result<()> {
    let api = node.api();
    let mut by_topic: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for (t, seq, cid) in acked.iter() {
        by_topic
            .entry(t.clone())
            .or_default()
            .push((*seq, cid.clone()));
    }
    for (t, events) in &by_topic {
        let c = chain(&api, t).with_context(|| format!("round {round}: {t}"))?;
        // chain() lists the newest first: seq s sits at index len - s.
        for (seq, cid) in events {
            let at = c.len().checked_sub(*seq as usize);
            ensure!(
                at.and_then(|i| c.get(i)) == Some(cid),
                "round {round}: {t}: acknowledged seq {seq} ({cid}) is not at its place in the chain of {}",
                c.len()
            );
        }
        let (status, v) = api.publish(t, &json!({ "after": "restart", "round": round }))?;
        ensure!(
            status == 200,
            "round {round}: {t}: publish after restart: {status} {v}"
        );
        ensure!(
            v["seq"].as_u64() == Some(c.len() as u64 + 1),
            "round {round}: {t}: resumed at {} after a chain of {}",
            v["seq"],
            c.len()
        );
        acked.push((
            t.clone(),
            c.len() as u64 + 1,
            v["cid"].as_str().context("cid")?.to_string(),
        ));
    }
    Ok(())
}
