//! The WebSocket publish stream (`GET /v1/publish`) on a real node process: many publishes in
//! flight on one connection are each acknowledged, every topic's events are stored in the order
//! they were sent, an acknowledged event survives `kill -9`, and bad frames, a plain GET and a
//! missing token are refused with a reason.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::future::join_all;
use serde_json::{Value, json};
use tidings_node::client::{Client, ClientError};
use tidings_tests::NodeProcess;
use tungstenite::Message;

const TOPICS: [&str; 4] = ["/pipe/a", "/pipe/b", "/pipe/c", "/pipe/d"];
const PER_TOPIC: u64 = 100;

#[test]
fn publishes_in_flight_on_one_stream_are_acknowledged_in_topic_order_and_survive_kill_9()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("n");
    let mut node = NodeProcess::start(&data, &[])?;
    let rt = tokio::runtime::Runtime::new()?;
    let acks: Vec<(String, u64, Result<Value, ClientError>)> = rt.block_on(async {
        let stream = Client::new(&node.api, None).publish_stream().await?;
        // Every publish is queued, in order, before the first answer is awaited: all 400 in
        // flight at once.
        let mut pending = Vec::new();
        for k in 1..=PER_TOPIC {
            for t in TOPICS {
                let answer = stream.send(t, &json!({ "k": k }).to_string()).await?;
                pending.push(async move { (t.to_string(), k, answer.await) });
            }
        }
        let answers = join_all(pending).await;
        anyhow::Ok(answers)
    })?;
    let mut cids: HashMap<(String, u64), String> = HashMap::new();
    for (topic, k, r) in acks {
        let ack = r.with_context(|| format!("publish {k} on {topic}"))?;
        // The k-th event sent on a topic is its k-th event: the stream kept each topic's order.
        ensure!(
            ack["seq"] == json!(k),
            "{topic}: publish {k} was stored as {ack}"
        );
        ensure!(ack["copies"] == json!(1), "{ack}");
        cids.insert(
            (topic, k),
            ack["cid"].as_str().context("ack without cid")?.to_string(),
        );
    }
    let published = node
        .api()
        .metric("tidings_published_events_total")
        .context("no published count")?;
    ensure!(published == 4 * PER_TOPIC, "metrics count {published}");

    // Acknowledged means durable: a kill -9 right after loses none of them.
    node.kill();
    let node = NodeProcess::start(&data, &[])?;
    let api = node.api();
    for t in TOPICS {
        let heads = api.heads(t)?;
        ensure!(heads.len() == 1, "{t}: heads {heads:?}");
        let head = api.event(&heads[0])?;
        ensure!(head["seq"] == json!(PER_TOPIC), "{t}: head {head}");
        ensure!(
            heads[0] == cids[&(t.to_string(), PER_TOPIC)],
            "{t}: head moved"
        );
    }
    for k in [1, PER_TOPIC / 2] {
        let cid = &cids[&(TOPICS[2].to_string(), k)];
        let e = api.event(cid)?;
        ensure!(e["body"] == json!({ "k": k }), "event {k}: {e}");
    }
    Ok(())
}

#[test]
fn bad_frames_a_plain_get_and_a_missing_token_are_refused_with_a_reason() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let url = format!("{}/v1/publish", node.api.replacen("http://", "ws://", 1));
    let (mut ws, _) = tungstenite::connect(&url)?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
    }
    let mut ask = |frame: Message| -> Result<Value> {
        ws.send(frame)?;
        loop {
            if let Message::Text(t) = ws.read()? {
                return Ok(serde_json::from_str(&t)?);
            }
        }
    };
    let a = ask(Message::text(
        r#"{"id":"x","topic":"/pipe/a","body":1,"extra":2}"#,
    ))?;
    ensure!(a["id"] == json!("x") && a["status"] == json!(400), "{a}");
    ensure!(
        a["error"].as_str().unwrap_or("").contains("unknown field"),
        "{a}"
    );
    let a = ask(Message::text("not json"))?;
    ensure!(a["status"] == json!(400) && a.get("id").is_none(), "{a}");
    let a = ask(Message::binary(vec![1, 2, 3]))?;
    ensure!(a["status"] == json!(400), "{a}");
    let a = ask(Message::text(r#"{"id":7,"topic":"no-slash","body":1}"#))?;
    ensure!(a["id"] == json!(7) && a["status"] == json!(400), "{a}");
    // The connection is still good after refusals.
    let a = ask(Message::text(
        r#"{"id":8,"topic":"/pipe/a","body":{"ok":true}}"#,
    ))?;
    ensure!(a["id"] == json!(8) && a["seq"] == json!(1), "{a}");
    let failed = node
        .api()
        .metric("tidings_publish_failures_total")
        .context("no failure count")?;
    ensure!(failed == 4, "failures counted: {failed}");

    let (status, body) = node.api().get_json("/v1/publish")?;
    ensure!(status == 400, "plain GET: {status} {body}");
    ensure!(
        body["error"].as_str().unwrap_or("").contains("WebSocket"),
        "{body}"
    );

    // With a token, the stream needs it like POST /v1/publish does.
    let locked = NodeProcess::start_with_api(
        &dir.path().join("locked"),
        "127.0.0.1:0",
        Some("s3cret"),
        &[],
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match Client::new(&locked.api, None).publish_stream().await {
            Err(ClientError::Api { status: 401, .. }) => {}
            Err(e) => anyhow::bail!("without the token: {e}"),
            Ok(_) => anyhow::bail!("the stream opened without the token"),
        }
        let s = Client::new(&locked.api, Some("s3cret".into()))
            .publish_stream()
            .await?;
        let ack = s.publish("/pipe/z", &json!(1)).await?;
        ensure!(ack["seq"] == json!(1), "{ack}");
        Ok(())
    })?;
    Ok(())
}
