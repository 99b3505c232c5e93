//! A node asked to stop (SIGTERM from a service manager, SIGHUP from a closed terminal) shuts
//! down cleanly and exits 0 even with subscribers connected, tells them why, and what it
//! acknowledged is there when it starts again.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use tidings_tests::{NodeProcess, poll, sse_subscribe};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn a_node_stops_cleanly_on_sigterm_and_on_sighup_and_keeps_what_it_stored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let mut cids: Vec<String> = Vec::new();
    let mut rounds: Vec<&str> = Vec::new();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        rounds.push(name);
        let mut node = NodeProcess::start(&data, &[])?;
        let api = node.api();
        for cid in &cids {
            api.event(cid)
                .with_context(|| format!("{cid} lost across a stop by signal"))?;
        }
        let (code, v) = api.publish("/stop/test", &json!({ "before": name }))?;
        ensure!(code == 200, "publish: {code} {v}");
        cids.push(v["cid"].as_str().context("cid")?.to_string());

        // Subscribers that stay connected must not hold the node open.
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/subscribe", node.api),
            &[("filter", "/stop/**")],
        )?;
        let (_sse_socket, sse) = sse_subscribe(&url)?;
        let (mut ws, _) = tungstenite::connect(url.as_str().replace("http://", "ws://"))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
        }
        poll(Duration::from_secs(30), || {
            (node.status().ok()?["subscriptions"].as_u64() == Some(2)).then_some(())
        })
        .context("subscriptions never registered")?;

        let status = node.stop_with(sig, Duration::from_secs(30))?;
        ensure!(
            status.success(),
            "node exited with {status} on {name}:\n{}",
            node.log()
        );
        ensure!(
            node.log().contains("stopped cleanly"),
            "no clean stop logged on {name}:\n{}",
            node.log()
        );
        // The event published just before the subscription may still reach it (deliveries
        // are routed after the acknowledgement), as the WebSocket's may; so may the one of the
        // round before, since a node that starts routes each stream's newest event again
        // (replica sync, in case a stop cut its delivery): the stream must end with the reason.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut heard = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let said = sse.recv_timeout(left).with_context(|| {
                format!("the SSE subscriber was not told why its stream ended; it got {heard:?}")
            })?;
            if said.contains("shutting down") {
                break;
            }
            ensure!(
                rounds
                    .iter()
                    .any(|n| said.contains(&format!("\"before\":\"{n}\""))),
                "SSE subscriber told {said:?}"
            );
            heard.push(said);
        }
        let close = loop {
            match ws
                .read()
                .context("the WebSocket subscriber got no close frame")?
            {
                Message::Close(frame) => break frame.context("close frame without a code")?,
                _ => continue,
            }
        };
        ensure!(
            close.code == CloseCode::Again && close.reason.contains("shutting down"),
            "WebSocket subscriber closed with {close:?}"
        );
    }
    let node = NodeProcess::start(&data, &[])?;
    for cid in &cids {
        node.api().event(cid)?;
    }
    Ok(())
}
