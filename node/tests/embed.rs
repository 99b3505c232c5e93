//! The embedding API (`tidings_node::embed`) and the subscribe API's `encoding=dag-cbor`, on a
//! node running inside the test process.

use std::time::Duration;

use serde_json::{Value, json};
use tidings_ipld_schema::{Cid, verify};
use tidings_node::client::Client;
use tidings_node::embed::{EmbedError, EmbeddedNode};
use tidings_node::{NodeConfig, NodeError};
use tungstenite::Message;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn publish(rt: &tokio::runtime::Runtime, client: &Client, topic: &str, body: Value) -> String {
    let r = rt.block_on(client.publish(topic, &body)).expect("publish");
    r["cid"].as_str().expect("cid").to_string()
}

#[test]
fn embedded_node_serves_stops_and_reopens_its_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let mut node = EmbeddedNode::start(NodeConfig::new(dir.path()), 2).expect("start");
    assert!(node.api_addr().ip().is_loopback());
    let client = Client::new(&node.api_url(), None);
    let cid = publish(&rt, &client, "/embed/a", json!({"n": 1}));
    let status = rt.block_on(client.status()).expect("status");
    assert_eq!(status["peer_id"], node.peer_id());
    assert_eq!(status["api"], node.api_url());
    assert_eq!(status["role"], "broker");
    let listen = status["listen"].as_array().expect("listen");
    assert!(
        listen.iter().all(|a| a
            .as_str()
            .is_some_and(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))),
        "{listen:?}"
    );
    let peer = node.peer_id().to_string();
    node.stop().expect("stop");
    assert!(node.is_stopped());
    node.stop().expect("a second stop does nothing");
    assert!(
        rt.block_on(client.status()).is_err(),
        "the API still answers"
    );
    // The store and identity were let go: the same dir opens again at once, same node.
    let again = EmbeddedNode::start(NodeConfig::new(dir.path()), 1).expect("restart");
    assert_eq!(again.peer_id(), peer);
    let client = Client::new(&again.api_url(), None);
    let ev = rt.block_on(client.event(&cid)).expect("event kept");
    assert_eq!(ev["body"]["n"], 1);
    drop(again);
    // Dropping stops it too (redb would refuse a store still open).
    let third = EmbeddedNode::start(NodeConfig::new(dir.path()), 1).expect("start after drop");
    assert_eq!(third.peer_id(), peer);
}

#[test]
fn start_inside_a_runtime_is_refused_and_drop_there_is_safe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let err = rt
        .block_on(async { EmbeddedNode::start(NodeConfig::new(dir.path()), 1) })
        .expect_err("inside a runtime");
    assert!(matches!(err, EmbedError::InsideRuntime), "{err}");
    let node = EmbeddedNode::start(NodeConfig::new(dir.path()), 1).expect("start");
    // Dropped in async code: shut down on a thread of its own instead of panicking.
    rt.block_on(async move { drop(node) });
    EmbeddedNode::start(NodeConfig::new(dir.path()), 1).expect("the store was released");
}

#[test]
fn node_refusals_come_back_as_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::new(dir.path());
    config.api = "0.0.0.0:0".parse().expect("addr");
    let err = EmbeddedNode::start(config, 1).expect_err("no token");
    assert!(
        matches!(err, EmbedError::Node(NodeError::TokenRequired(_))),
        "{err}"
    );
    let mut config = NodeConfig::new(dir.path());
    config.net.listen.clear();
    assert!(matches!(
        EmbeddedNode::start(config, 1),
        Err(EmbedError::Node(NodeError::Net(_)))
    ));
}

/// Reads one binary frame: CID bytes then the block, verified against each other.
fn read_event(
    ws: &mut tungstenite::WebSocket<std::net::TcpStream>,
) -> (Cid, tidings_ipld_schema::Event) {
    loop {
        match ws.read().expect("frame") {
            Message::Binary(frame) => {
                let mut cursor = std::io::Cursor::new(&frame[..]);
                let cid = Cid::read_bytes(&mut cursor).expect("a CID first");
                let at = cursor.position() as usize;
                let event = verify(&cid, &frame[at..]).expect("the block verifies against the CID");
                return (cid, event);
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

fn connect(addr: std::net::SocketAddr, query: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (ws, _) =
        tungstenite::client(format!("ws://{addr}/v1/subscribe?{query}"), stream).expect("upgrade");
    ws
}

#[test]
fn subscribe_with_dag_cbor_sends_cid_and_block_per_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let node = EmbeddedNode::start(NodeConfig::new(dir.path()), 2).expect("start");
    let client = Client::new(&node.api_url(), None);
    let old = publish(&rt, &client, "/enc/a", json!({"n": 0}));

    // Live events: read from the store when sent.
    let mut live = connect(node.api_addr(), "filter=/enc/**&encoding=dag-cbor");
    let cids: Vec<String> = (1..=3)
        .map(|n| {
            publish(
                &rt,
                &client,
                "/enc/a",
                json!({"n": n, "raw": {"/": {"bytes": "AAE"}}}),
            )
        })
        .collect();
    for (i, want) in cids.iter().enumerate() {
        // Routing follows the acknowledgement, so the event acknowledged just before this
        // subscription opened may still reach it; nothing else may come first.
        let (cid, event) = loop {
            let (cid, event) = read_event(&mut live);
            if i > 0 || cid.to_string() != old {
                break (cid, event);
            }
        };
        assert_eq!(&cid.to_string(), want);
        assert_eq!(event.seq, i as u64 + 2);
        assert_eq!(event.topic, "/enc/a");
        assert_eq!(
            tidings_ipld_schema::json::ipld_to_json(&event.body),
            json!({"n": i + 1, "raw": {"/": {"bytes": "AAE"}}})
        );
    }
    // Acks are text frames, as with JSON.
    live.send(Message::text(json!({"ack": cids[0]}).to_string()))
        .expect("ack");

    // History first (its blocks come with the history read), then live.
    let mut replay = connect(node.api_addr(), "filter=/enc/**&encoding=dag-cbor&since=0");
    let got: Vec<String> = (0..4)
        .map(|_| read_event(&mut replay).0.to_string())
        .collect();
    let mut want = vec![old];
    want.extend(cids.iter().cloned());
    assert_eq!(got, want);
    let newest = publish(&rt, &client, "/enc/a", json!({"n": 4}));
    assert_eq!(read_event(&mut replay).0.to_string(), newest);

    // JSON stays the default.
    let mut json_ws = connect(node.api_addr(), "filter=/enc/**");
    let text = publish(&rt, &client, "/enc/a", json!({"n": 5}));
    loop {
        match json_ws.read().expect("frame") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                // The one acknowledged just before it opened may come first (see above).
                if v["cid"] == newest.as_str() {
                    continue;
                }
                assert_eq!(v["cid"], text.as_str());
                break;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[test]
fn bad_encodings_are_refused_before_any_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let node = EmbeddedNode::start(NodeConfig::new(dir.path()), 1).expect("start");
    let addr = node.api_addr();
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    match tungstenite::client(
        format!("ws://{addr}/v1/subscribe?filter=/a/**&encoding=cbor"),
        stream,
    ) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status(), 400);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("dag-cbor"), "{body}");
        }
        other => panic!("expected a 400, got {:?}", other.map(|_| ())),
    }
    // Server-Sent Events carry text only.
    let resp = rt
        .block_on(
            reqwest::Client::new()
                .get(format!("{}/v1/subscribe", node.api_url()))
                .query(&[("filter", "/a/**"), ("encoding", "dag-cbor")])
                .header("accept", "text/event-stream")
                .send(),
        )
        .expect("request");
    assert_eq!(resp.status(), 400);
    let body: Value = rt.block_on(resp.json()).expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("WebSocket")),
        "{body}"
    );
}
