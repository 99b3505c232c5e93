//! Hostile clients against a real node process (bad input gets a clear error and
//! changes nothing). Every request in the table must be answered with a 4xx whose body is
//! `{"error": "<non-empty message>"}` (never a 5xx, never a dropped connection), and must leave
//! the node as it was: the same heads on every topic the table touches and the same block count
//! and bytes in `/v1/status`. Also: the bearer token of a non-loopback API, and a node that
//! ignores SIGPIPE (a client going away mid-answer must not kill it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use tidings_ipld_schema::car::write_car;
use tidings_ipld_schema::{
    Block, Cid, DAG_CBOR, Event, Ipld, Keypair, MAX_BLOCK_SIZE, RAW, cid_of,
};
use tidings_matcher::Filter;
use tidings_tests::{Api, NodeProcess};

/// The topic the node holds events on before the table runs.
const TOPIC: &str = "/hostile/t";
/// The topic of the CAR files in the table (none of them may land).
const CAR_TOPIC: &str = "/hostile/car";

/// One hostile request and what it must get.
struct Case {
    name: String,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The exact status, when the API promises one; otherwise any 4xx.
    status: Option<u16>,
}

impl Case {
    fn new(name: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            status: None,
        }
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    fn status(mut self, status: u16) -> Case {
        self.status = Some(status);
        self
    }
}

fn publish(name: &str, body: impl Into<Vec<u8>>) -> Case {
    Case::new(format!("publish: {name}"), Method::POST, "/v1/publish").body(body)
}

fn publish_json(name: &str, v: Value) -> Case {
    publish(name, v.to_string())
}

fn import(name: &str, car: Vec<u8>) -> Case {
    Case::new(format!("import: {name}"), Method::POST, "/v1/car")
        .body(car)
        .status(400)
}

/// Percent-encodes everything but unreserved characters, so the filter reaches the node as is.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Bad topics, for publish, heads and export alike.
fn bad_topics() -> Vec<String> {
    vec![
        String::new(),
        "/".into(),
        "hostile".into(),
        "/hostile/".into(),
        "//hostile".into(),
        "/hostile//t".into(),
        "/hostile/*".into(),
        "/hostile/**".into(),
        "/hostile/a*b".into(),
        "/hostile/\u{0}".into(),
        "/hostile/\n".into(),
        "/hostile/\u{7f}".into(),
        // 17 segments (the limit is 16) and 257 bytes (the limit is 256).
        "/s".repeat(17),
        format!("/{}", "x".repeat(256)),
    ]
}

/// Filters in all three syntaxes that must be refused (each is also checked against
/// `Filter::parse` first, so the table cannot silently go stale).
fn bad_filters() -> Vec<String> {
    let mut v: Vec<String> = [
        // Text form.
        "",
        "   ",
        "stocks/**",
        "/",
        "/stocks/",
        "/stocks//x",
        "/*/x",
        "/**",
        "/a/**/b",
        "/a/b*c",
        "/a where",
        "/a when x = 1",
        "/a where = 1",
        "/a where price",
        "/a where price 10",
        "/a where price <",
        "/a where price < true",
        "/a where price < abc",
        "/a where price < 1.",
        "/a where price < 10 and",
        "/a where price < 10 xor b = 1",
        "/a where (price < 10",
        "/a where price < 10)",
        "/a where not",
        "/a where a..b = 1",
        "/a where a = \"x",
        "/a where a = \"\\q\"",
        "/a where a = \"\\ud800\"",
        "/a where a in 1",
        "/a where a in [1,]",
        "/a where a prefix 1",
        "/a where and = 1",
        "/a where $..[ < 1",
        "/a where a =! 1",
        // The seeds' JSON form.
        "{",
        "{}",
        "[1]",
        r#"{"topic": 5}"#,
        r#"{"topic": "stocks"}"#,
        r#"{"topic": "/a/**/b"}"#,
        r#"{"topic": "/a" "x": 1}"#,
        r#"{"topic": "/a", "x": }"#,
        r#"{"topic": "/a", "x": 1} x"#,
        r#"{"topic": "/a", "x": [1]}"#,
        r#"{"topic": "/a", "x": "<"}"#,
        r#"{"topic": "/a", "x": "!x"}"#,
        r#"{"topic": "/a", "x": 1, "x": 2}"#,
        r#"{"topic": "/a", "a..b": 1}"#,
        r#"{"topic": "/a", "x": "\q"}"#,
        // Mongo-style operators.
        r#"{"topic": "/a", "x": {}}"#,
        r#"{"topic": "/a", "x": {"$gt": [1]}}"#,
        r#"{"topic": "/a", "x": {"$lt": null}}"#,
        r#"{"topic": "/a", "x": {"$in": 1}}"#,
        r#"{"topic": "/a", "x": {"$exists": 1}}"#,
        r#"{"topic": "/a", "x": {"$prefix": 1}}"#,
        r#"{"topic": "/a", "x": {"$regex": "a"}}"#,
        r#"{"topic": "/a", "x": {"$gt": 1, "y": 2}}"#,
        r#"{"topic": "/a", "$nor": []}"#,
        r#"{"topic": "/a", "$or": {}}"#,
        r#"{"topic": "/a", "$or": []}"#,
        r#"{"topic": "/a", "$or": [{"topic": "/b"}]}"#,
        r#"{"topic": "/a", "$and": [1]}"#,
        r#"{"topic": "/a", "x": {"$not": 5}}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Limits: nesting, predicate count, DNF expansion, source size.
    v.push(format!(
        "/a where {}x = 1{}",
        "(".repeat(200),
        ")".repeat(200)
    ));
    v.push(format!("/a where {}x = 1", "not ".repeat(200)));
    v.push(format!(
        "/a where {}",
        (0..300)
            .map(|i| format!("a != {i}"))
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    v.push(format!(
        "/a where {}",
        (0..8)
            .map(|i| format!("(a = {i} or b = {i})"))
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    v.push(format!(
        "{{\"topic\": \"/a\", \"x\": {}1{}}}",
        "[".repeat(200),
        "]".repeat(200)
    ));
    v
}

/// Bad CID strings for `/v1/events/{cid}` and `/v1/blocks/{cid}` (already path-safe), made
/// from `good`, a well-formed CID string.
fn bad_cids(good: &str) -> Vec<String> {
    vec![
        // One character short: the digest is cut.
        good[..good.len() - 1].to_string(),
        // A character outside base32.
        format!("{}1", &good[..good.len() - 1]),
        // An unknown multibase prefix.
        format!("!{}", &good[1..]),
        "notacid".into(),
        "bafy".into(),
        "Qm123".into(),
        "z".into(),
        "%FF%FE".into(),
        "bafyrei%00".into(),
        "b".repeat(5000),
    ]
}

/// `varint(len) bytes`, as CAR frames its header and sections.
fn frame(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A CAR v1 file with no roots and these raw sections (`cid bytes ++ block`), written by hand
/// so that it can hold what `write_car` refuses to write.
fn raw_car(sections: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    frame(&mut out, b"\xa2\x65roots\x80\x67version\x01");
    for (cid, data) in sections {
        frame(&mut out, &[cid.as_slice(), data.as_slice()].concat());
    }
    out
}

fn car(blocks: &[&Block]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let roots: Vec<Cid> = blocks.last().map(|b| b.cid).into_iter().collect();
    write_car(
        &mut out,
        &roots,
        blocks.iter().map(|b| (b.cid, b.data.clone())),
    )?;
    Ok(out)
}

/// Re-signs `e` with `k` after an edit, so only the edit is wrong.
fn resign(mut e: Event, k: &Keypair) -> Result<Block> {
    e.sig = k.sign(&e.signing_bytes()?)?;
    Ok(e.to_block()?)
}

fn car_cases() -> Result<Vec<Case>> {
    let k = Keypair::ed25519_from_bytes([9; 32])?;
    let other = Keypair::ed25519_from_bytes([10; 32])?;
    let body = Ipld::Map([("price".to_string(), Ipld::Integer(5))].into());
    let (e1, b1) = Event::sign_block(&k, CAR_TOPIC, body.clone(), 1, 1, vec![])?;
    let (_, b2) = Event::sign_block(&k, CAR_TOPIC, body.clone(), 2, 2, vec![b1.cid])?;
    let good = car(&[&b1, &b2])?;
    // Sanity: the good file is importable in principle (only its damaged versions are sent).
    tidings_ipld_schema::car::read_car(&good)?;

    let mut forged_body = e1.clone();
    forged_body.body = Ipld::Integer(1_000_000);
    let forged_body = forged_body.to_block()?;
    let mut forged_author = e1.clone();
    forged_author.author = other.public().encode_protobuf();
    let forged_author = forged_author.to_block()?;
    let mut short_sig = e1.clone();
    short_sig.sig.truncate(32);
    let short_sig = short_sig.to_block()?;
    let mut seq0 = e1.clone();
    seq0.seq = 0;
    let seq0 = resign(seq0, &k)?;
    let mut wild = e1.clone();
    wild.topic = "/hostile/*".into();
    let wild = resign(wild, &k)?;
    let huge = vec![7u8; MAX_BLOCK_SIZE + 1];
    let huge_cid = cid_of(RAW, &huge);
    // CID bytes by hand: v1, dag-cbor, then a multihash this node does not check.
    let sha512_cid = [&[0x01, 0x71, 0x13, 0x40][..], &[0u8; 64]].concat();
    let identity_cid = [&[0x01, 0x71, 0x00, 0x03][..], b"abc"].concat();
    let mut truncated_varint = good.clone();
    truncated_varint.push(0x80);

    let mut cases = vec![
        import("empty body", Vec::new()),
        import("one zero byte", vec![0]),
        import("garbage", b"this is not a CAR file".to_vec()),
        import("header length past the end", vec![0xff, 0xff, 0x3f, 0xa0]),
        import(
            "header length of 2^62",
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40],
        ),
        import("header not a map", {
            let mut v = Vec::new();
            frame(&mut v, &[0x01]);
            v
        }),
        import("header without version", {
            let mut v = Vec::new();
            frame(&mut v, b"\xa1\x65roots\x80");
            v
        }),
        import("CAR v2 header", {
            let mut v = Vec::new();
            frame(&mut v, b"\xa2\x65roots\x80\x67version\x02");
            v
        }),
        import("roots not links", {
            let mut v = Vec::new();
            frame(&mut v, b"\xa2\x65roots\x81\x01\x67version\x01");
            v
        }),
        import("truncated in the header", good[..5].to_vec()),
        import(
            "truncated in the last block",
            good[..good.len() - 10].to_vec(),
        ),
        import("truncated varint after the last block", truncated_varint),
        import(
            "block bytes do not match the CID",
            raw_car(&[(b1.cid.to_bytes(), b2.data.clone())]),
        ),
        import(
            "good block, then one that does not match its CID (all-or-nothing)",
            raw_car(&[
                (b1.cid.to_bytes(), b1.data.clone()),
                (b2.cid.to_bytes(), b1.data.clone()),
            ]),
        ),
        import("forged signature: body changed", car(&[&forged_body])?),
        import("forged signature: another author", car(&[&forged_author])?),
        import("signature cut short", car(&[&short_sig])?),
        import(
            "good event, then a forged one (all-or-nothing)",
            car(&[&b1, &forged_body])?,
        ),
        import("seq 0, correctly signed", car(&[&seq0])?),
        import("wildcard topic, correctly signed", car(&[&wild])?),
        import(
            "block over 1 MiB",
            raw_car(&[(huge_cid.to_bytes(), huge.clone())]),
        ),
        import("section length of 2^62", {
            let mut v = good.clone();
            v.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
            v
        }),
        import("empty section", [raw_car(&[]).as_slice(), &[0x00]].concat()),
        import("sha2-512 CID", raw_car(&[(sha512_cid, b1.data.clone())])),
        import(
            "identity-hash CID",
            raw_car(&[(identity_cid, b"abc".to_vec())]),
        ),
        import(
            "CID version 2",
            raw_car(&[([&[0x02], &b1.cid.to_bytes()[1..]].concat(), b1.data.clone())]),
        ),
    ];
    // A dag-cbor section of an event whose encoding is cut: the CID matches the cut bytes, so
    // only the decoder can tell. It is not an event then, but neither may it be half-stored.
    let cut = b1.data[..b1.data.len() / 2].to_vec();
    cases.push(
        import(
            "cut event under its own CID, then a forged event",
            raw_car(&[
                (cid_of(DAG_CBOR, &cut).to_bytes(), cut),
                (forged_body.cid.to_bytes(), forged_body.data.clone()),
            ]),
        )
        .status(400),
    );
    Ok(cases)
}

fn table() -> Result<Vec<Case>> {
    let mut cases = vec![
        publish("empty body", ""),
        publish("not JSON", "nope"),
        publish("unclosed object", "{"),
        publish(
            "trailing garbage",
            r#"{"topic": "/hostile/t", "body": 1} x"#,
        ),
        publish(
            "invalid UTF-8",
            b"{\"topic\": \"/hostile/\xff\", \"body\": 1}".to_vec(),
        ),
        publish(
            "lone surrogate",
            r#"{"topic": "/hostile/t", "body": "\ud800"}"#,
        ),
        publish(
            "number out of range",
            r#"{"topic": "/hostile/t", "body": 1e400}"#,
        ),
        publish(
            "JSON nested 10000 deep",
            format!(
                r#"{{"topic": "/hostile/t", "body": {}1{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
        ),
        publish_json("array", json!([1, 2])),
        publish_json("string", json!("x")),
        publish_json("null", json!(null)),
        publish_json("missing topic", json!({"body": {}})),
        publish_json("missing body", json!({"topic": TOPIC})),
        publish_json("unknown field", json!({"topic": TOPIC, "body": {}, "x": 1})),
        publish_json("topic a number", json!({"topic": 5, "body": {}})),
        publish_json("topic null", json!({"topic": null, "body": {}})),
        publish_json(
            "body nested 101 deep",
            json!({"topic": TOPIC, "body": (0..101).fold(json!(1), |v, _| json!([v]))}),
        ),
        publish_json(
            "reserved DAG-JSON key with a bad link",
            json!({"topic": TOPIC, "body": {"/": "notacid"}}),
        ),
        publish_json(
            "reserved DAG-JSON key with bad base64",
            json!({"topic": TOPIC, "body": {"/": {"bytes": "!!!"}}}),
        ),
        publish_json(
            "reserved DAG-JSON key with a number",
            json!({"topic": TOPIC, "body": {"/": 5}}),
        ),
        publish_json(
            "event over 1 MiB (body under 2 MiB)",
            json!({"topic": TOPIC, "body": "x".repeat(MAX_BLOCK_SIZE + 1000)}),
        )
        .status(413),
        publish("body over 2 MiB", {
            let mut b = format!(r#"{{"topic": "{TOPIC}", "body": ""#).into_bytes();
            b.extend(std::iter::repeat_n(b'x', (2 << 20) + 1000));
            b.extend_from_slice(b"\"}");
            b
        })
        .status(413),
    ];
    for t in bad_topics() {
        cases.push(publish_json(
            &format!("bad topic {t:.40?}"),
            json!({"topic": t, "body": {}}),
        ));
        cases.push(Case::new(
            format!("heads of bad topic {t:.40?}"),
            Method::GET,
            format!("/v1/heads?topic={}", query_escape(&t)),
        ));
        cases.push(Case::new(
            format!("export of bad topic {t:.40?}"),
            Method::GET,
            format!("/v1/car?topic={}", query_escape(&t)),
        ));
    }
    for q in [
        "/v1/heads",
        "/v1/heads?topic=%FF",
        "/v1/heads?topic=%",
        "/v1/car",
        "/v1/car?topic=%FF",
    ] {
        cases.push(Case::new(format!("query {q}"), Method::GET, q).status(400));
    }
    for f in bad_filters() {
        ensure!(
            Filter::parse(&f).is_err(),
            "table: {f:.60?} is a good filter"
        );
        let path = format!("/v1/subscribe?filter={}", query_escape(&f));
        let name = format!("filter {f:.60?}");
        cases.push(
            Case::new(format!("SSE {name}"), Method::GET, path.clone())
                .header("accept", "text/event-stream"),
        );
        // A WebSocket handshake with a bad filter is refused before any upgrade.
        cases.push(
            Case::new(format!("WebSocket {name}"), Method::GET, path)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        );
    }
    for q in [
        "/v1/subscribe",
        "/v1/subscribe?filter=%FF",
        "/v1/subscribe?filter=%2Fa&durable=",
        "/v1/subscribe?filter=%2Fa&durable=a%20b",
        "/v1/subscribe?filter=%2Fa&durable=%2F..%2Fx",
        "/v1/subscribe?filter=%2Fa&since=-1",
        "/v1/subscribe?filter=%2Fa&since=yesterday",
        "/v1/subscribe?filter=%2Fa&since=99999999999999999999999",
    ] {
        cases.push(Case::new(format!("query {q}"), Method::GET, q).status(400));
    }
    // Well-formed CIDs of blocks this node does not have.
    let absent = cid_of(DAG_CBOR, b"not stored here").to_string();
    for c in bad_cids(&absent) {
        cases.push(Case::new(
            format!("event {c:.40}"),
            Method::GET,
            format!("/v1/events/{c}"),
        ));
        cases.push(Case::new(
            format!("block {c:.40}"),
            Method::GET,
            format!("/v1/blocks/{c}"),
        ));
    }
    cases.push(Case::new("absent event", Method::GET, format!("/v1/events/{absent}")).status(404));
    cases.push(Case::new("absent block", Method::GET, format!("/v1/blocks/{absent}")).status(404));
    for name in ["%FF", "a%20b", "a%2Fb", "%00", &"n".repeat(129)] {
        cases.push(
            Case::new(
                format!("delete durable {name:.40}"),
                Method::DELETE,
                format!("/v1/durable/{name}"),
            )
            .status(400),
        );
    }
    cases.push(
        Case::new(
            "delete unknown durable",
            Method::DELETE,
            "/v1/durable/nobody",
        )
        .status(404),
    );
    cases.push(Case::new("unknown route", Method::GET, "/v1/nope").status(404));
    cases.push(Case::new("wrong method on publish", Method::DELETE, "/v1/publish").status(405));
    // GET is the WebSocket publish stream: without the upgrade, a 400 that says how to publish.
    cases.push(
        Case::new(
            "publish stream without an upgrade",
            Method::GET,
            "/v1/publish",
        )
        .status(400),
    );
    cases.push(
        Case::new(
            "wrong method on heads",
            Method::DELETE,
            "/v1/heads?topic=/hostile/t",
        )
        .status(405),
    );
    cases.push(Case::new("wrong method on status", Method::POST, "/v1/status").status(405));
    cases.extend(car_cases()?);
    Ok(cases)
}

/// What must not change: each touched topic's heads, and the store's block count and bytes.
fn snapshot(api: &Api) -> Result<Value> {
    let (code, status) = api.get_json("/v1/status")?;
    ensure!(code == 200, "status answered {code}");
    Ok(json!({
        "heads": api.heads(TOPIC)?,
        "car_heads": api.heads(CAR_TOPIC)?,
        "store": status["store"],
    }))
}

fn check(api: &Api, case: &Case) -> Result<()> {
    let mut req = api
        .request(case.method.clone(), &case.path)
        .body(case.body.clone());
    for (k, v) in &case.headers {
        req = req.header(*k, v);
    }
    let resp = req.send().context("no answer")?;
    let code = resp.status().as_u16();
    let text = resp.text().context("reading the answer")?;
    ensure!((400..500).contains(&code), "answered {code}: {text:.300}");
    if let Some(want) = case.status {
        ensure!(
            code == want,
            "answered {code}, expected {want}: {text:.300}"
        );
    }
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{code} body is not JSON: {text:.300}"))?;
    let msg = v["error"].as_str().context("no \"error\" string")?;
    ensure!(!msg.trim().is_empty(), "empty error message");
    ensure!(
        v.as_object().is_some_and(|o| o.len() == 1),
        "error body has more than \"error\": {v}"
    );
    Ok(())
}

#[test]
fn hostile_requests_get_a_clear_4xx_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let api = node.api();
    for i in 0..3 {
        let (code, v) = api.publish(TOPIC, &json!({"i": i}))?;
        ensure!(code == 200, "setup publish: {code} {v}");
    }
    let before = snapshot(&api)?;
    ensure!(before["store"]["blocks"] == 3, "setup: {before}");

    let cases = table()?;
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = check(&api, case) {
            failures.push(format!("{}: {e:#}", case.name));
        }
        let now = snapshot(&api)?;
        if now != before {
            failures.push(format!(
                "{}: state changed from {before} to {now}",
                case.name
            ));
        }
    }
    // The node still works after all of it.
    let (code, v) = api.publish(TOPIC, &json!({"after": true}))?;
    ensure!(code == 200, "publish after the table: {code} {v}");
    ensure!(
        failures.is_empty(),
        "{} of {} hostile requests were mishandled:\n{}\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        node.log()
    );
    eprintln!(
        "{} hostile requests, each a clear 4xx, nothing changed",
        cases.len()
    );
    Ok(())
}

/// Sends `head` on a raw socket and returns the status of the answer.
fn raw_status(api: &Api, head: &str) -> Result<u16> {
    let addr = api.base().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(head.as_bytes())?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    let line = String::from_utf8_lossy(&buf);
    let Some(code) = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|c| c.trim().parse().ok())
    else {
        bail!("not an HTTP answer: {line:?}");
    };
    Ok(code)
}

#[test]
fn requests_too_large_for_http_itself_are_refused() -> Result<()> {
    // A filter over the 64 KiB filter limit cannot even be put in a URL (URIs stop at 64 KiB in
    // the HTTP stack, before the API sees them): the HTTP layer refuses it with a 4xx of its own,
    // and the node goes on serving.
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let api = node.api();
    let long = format!(
        "/v1/subscribe?filter=%2Fa%20where%20x%3D%22{}%22",
        "y".repeat(70_000)
    );
    let code = raw_status(
        &api,
        &format!("GET {long} HTTP/1.1\r\nHost: tidings\r\n\r\n"),
    )?;
    ensure!((400..500).contains(&code), "70 KB request line: {code}");
    ensure!(node.status().is_ok(), "the node stopped answering");
    Ok(())
}

#[test]
fn a_non_loopback_api_needs_the_bearer_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let token = "s3cret-token";
    // Listens on every interface; the test itself only ever talks to 127.0.0.1.
    let node = NodeProcess::start_with_api(&dir.path().join("n"), "0.0.0.0:0", Some(token), &[])?;
    let bare = node.api();
    let authed = node.api().with_token(token);
    let (code, v) = authed.publish(TOPIC, &json!({"ok": 1}))?;
    ensure!(code == 200, "with the token: {code} {v}");
    let heads = authed.heads(TOPIC)?;

    let wrong: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong token", Some(format!("Bearer {token}x"))),
        (
            "prefix of the token",
            Some(format!("Bearer {}", &token[..5])),
        ),
        ("empty token", Some("Bearer ".into())),
        (
            "token with a space inside",
            Some(format!("Bearer {token} x")),
        ),
        ("basic scheme", Some(format!("Basic {token}"))),
        ("token without scheme", Some(token.to_string())),
    ];
    for (what, header) in wrong {
        for (method, path, body) in [
            (Method::GET, "/v1/status".to_string(), String::new()),
            (Method::GET, "/v1/topics".to_string(), String::new()),
            (
                Method::GET,
                format!("/v1/stream?topic={}", query_escape(TOPIC)),
                String::new(),
            ),
            (
                Method::GET,
                format!("/v1/heads?topic={}", query_escape(TOPIC)),
                String::new(),
            ),
            (
                Method::POST,
                "/v1/publish".to_string(),
                json!({"topic": TOPIC, "body": {"sneaky": true}}).to_string(),
            ),
            (
                Method::GET,
                "/v1/subscribe?filter=%2Fhostile%2F**".to_string(),
                String::new(),
            ),
        ] {
            let mut req = bare.request(method.clone(), &path).body(body);
            if let Some(h) = &header {
                req = req.header("authorization", h);
            }
            let resp = req.send()?;
            let code = resp.status().as_u16();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let v: Value = resp.json()?;
            ensure!(code == 401, "{what}, {method} {path}: {code} {v}");
            ensure!(
                challenge.starts_with("Bearer"),
                "{what}: no Bearer challenge"
            );
            ensure!(
                v["error"].as_str().is_some_and(|m| m.contains("token")),
                "{what}: {v}"
            );
        }
    }
    ensure!(
        authed.heads(TOPIC)? == heads,
        "a refused publish changed the heads"
    );
    // The scheme name is case-insensitive (RFC 9110 §11.1); the token is not.
    let (code, v) = {
        let r = bare
            .request(Method::GET, "/v1/status")
            .header("authorization", format!("bearer {token}"))
            .send()?;
        (r.status().as_u16(), r.json::<Value>()?)
    };
    ensure!(code == 200, "lower-case scheme: {code} {v}");
    let r = bare
        .request(Method::GET, "/v1/status")
        .header("authorization", format!("Bearer {}", token.to_uppercase()))
        .send()?;
    ensure!(
        r.status().as_u16() == 401,
        "the token must be case-sensitive"
    );
    Ok(())
}

#[test]
fn a_non_loopback_api_without_a_usable_token_does_not_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (what, token) in [
        ("no token", None),
        ("empty token", Some("")),
        ("blank token", Some("  ")),
    ] {
        let err = match NodeProcess::start_with_api(&dir.path().join("n"), "0.0.0.0:0", token, &[])
        {
            Ok(_) => bail!("{what}: the node started on 0.0.0.0"),
            Err(e) => format!("{e:#}"),
        };
        // Refused at start: the process exits, rather than running with a credential anyone has.
        ensure!(
            err.contains("exited") && err.contains("--token"),
            "{what}: {err}"
        );
    }
    Ok(())
}

/// A client that goes away while the node is still writing its answer must not stop the
/// node. `tidings` restores the default SIGPIPE action so that `tidings sub | head` ends
/// quietly, and the node kept it: a write to a socket its client had reset killed the node
/// (seen when `tidings fetch` exited at its summary, about one run in five of the large-event
/// test). The node must ignore SIGPIPE (a failed write is an error like any other), as the
/// kernel sees it.
#[test]
fn the_node_ignores_sigpipe() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid()))?;
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .context("no SigIgn in /proc/<pid>/status")?;
    ensure!(
        ignored & (1 << (libc::SIGPIPE - 1)) != 0,
        "the node does not ignore SIGPIPE (SigIgn {ignored:x})"
    );
    Ok(())
}
