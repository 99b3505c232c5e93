//! The fuzz targets' seed corpora (`fuzz/seeds/<target>/`) are generated here, deterministically
//! (fixed keys, fixed times; ed25519 signatures are deterministic), and this test checks that the
//! committed files are exactly what the generator makes: a change to the event, CAR or wire
//! format that would leave the fuzzers starting from stale, invalid seeds fails here first.
//!
//! Regenerate after such a change with
//! `TIDINGS_WRITE_SEEDS=1 cargo test -p tidings-tests --test fuzz_seeds`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use tidings_ipld_schema::car::write_car;
use tidings_ipld_schema::json::json_to_ipld;
use tidings_ipld_schema::{Block, Cid, Event, Ipld, Keypair, RAW, cid_of, verify};
use tidings_matcher::Filter;
use tidings_node::net::deliver::{DeliverRequest, DeliverResponse};
use tidings_node::net::fetch::{self, FetchEnd, FetchRequest};
use tidings_node::net::history::{Ack, HistoryRequest, HistoryResponse};
use tidings_node::net::publish::{PublishAnswer, PublishRequest, PublishResponse};
use tidings_node::net::replicate::{ReplicateRequest, ReplicateResponse};
use tidings_node::net::subscribe::{SubscribeRequest, SubscribeResponse};
use tidings_node::net::wire::{Kind, Message, encode};

type Seeds = BTreeMap<String, Vec<u8>>;

/// A raw block that a seed event links to from its body.
const LINKED: &[u8] = b"linked content";

/// Filters from the seeds, docs/filters.md, the README and the tests, good and bad, in all three
/// syntaxes.
const FILTERS: &[&str] = &[
    r#"/stocks/** where exchange = "Euronext Lisboa" and order = "buy" and number > 50 and price < 10"#,
    r#"{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": ">50", "price": "<10"}"#,
    r#"{"topic": "/stocks/**", "exchange": {"$eq": "Euronext Lisboa"}, "order": {"$in": ["buy"]}, "number": {"$gt": 50}, "price": {"$lt": 10}}"#,
    r#"/stocks/** where order = "buy" and price < 10"#,
    r#"{"topic": "/stocks/*/CTT", "price": {"$gte": 5}, "order": {"$in": ["buy", "sell"]}}"#,
    r#"/stocks/nyse/* where number > 500 or not (order = "sell")"#,
    r#"{"topic": "/stocks/**", "$or": [{"symbol": {"$prefix": "A"}}, {"price": {"$lt": 2}}]}"#,
    r#"/fruits/** where ripe = true"#,
    r#"/fruits/citrus/**"#,
    r#"/a where $.legs[*].price < 10"#,
    r#"/a/*/c where n.x >= 2.5 and b != "x" and c exists and s prefix "ab""#,
    r#"/a where a in [1, "2", true, null] and not (b not in ["x"])"#,
    r#"/a where a = "\u00e9\n" or b <= -1e3"#,
    r#"{"topic": "/a", "$and": [{"a": {"$ne": 1}}, {"$not": {"b": {"$exists": true}}}], "c": {"$nin": [1, 2]}}"#,
    r#"{"topic": "/a/*", "x": {"$eq": "<x"}, "y": "!=3", "z": ">=\"5\"", "$.l[*]": 3}"#,
    "/stocks/** where price 10",
    "/a where (price < 10",
    r#"{"topic": "/a", "x": {"$regex": "a"}}"#,
];

/// Bodies for the seed events: the stock example, nesting, every IPLD kind JSON can carry.
fn bodies() -> Vec<serde_json::Value> {
    let link = cid_of(RAW, LINKED).to_string();
    vec![
        json!({"exchange": "Euronext Lisboa", "order": "buy", "number": "100", "price": 5.55}),
        json!({"legs": [{"price": 9.5}, {"price": 11}], "n": {"x": -3, "y": [true, null]}}),
        json!({"bytes": {"/": {"bytes": "aGVsbG8"}}, "link": {"/": link}}),
        json!([
            1,
            -1,
            18446744073709551615u64,
            -9223372036854775808i64,
            0.5,
            "é"
        ]),
        json!(null),
    ]
}

fn keypair(seed: u8) -> Result<Keypair> {
    Ok(Keypair::ed25519_from_bytes([seed; 32])?)
}

/// A two-writer stream on `/stocks/euronext/CTT` and events of other shapes.
fn events() -> Result<Vec<Block>> {
    let (a, b) = (keypair(1)?, keypair(2)?);
    let topic = "/stocks/euronext/CTT";
    let mut out = Vec::new();
    let mut prev: Vec<Cid> = Vec::new();
    for (i, body) in bodies().into_iter().enumerate() {
        let key = if i % 2 == 0 { &a } else { &b };
        let seq = (i / 2 + 1) as u64;
        let (_, block) = Event::sign_block(
            key,
            topic,
            json_to_ipld(&body)?,
            seq,
            1_763_700_000_000 + i as u64,
            prev.clone(),
        )?;
        prev = vec![block.cid];
        out.push(block);
    }
    let mut deep = Ipld::Null;
    for _ in 0..tidings_ipld_schema::MAX_BODY_DEPTH {
        deep = Ipld::List(vec![deep]);
    }
    out.push(Event::sign_block(&a, "/é/ü/\u{1F600}", deep, 1, 0, vec![])?.1);
    Ok(out)
}

fn car(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_car(&mut out, roots, blocks.iter().cloned())?;
    Ok(out)
}

fn generate() -> Result<BTreeMap<&'static str, Seeds>> {
    let mut all = BTreeMap::new();

    let filters: Seeds = FILTERS
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("{i:02}.txt"), f.as_bytes().to_vec()))
        .collect();
    all.insert("filter_parse", filters);

    let events = events()?;
    for b in &events {
        verify(&b.cid, &b.data).context("seed events verify")?;
    }
    let event_seeds: Seeds = events
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("{i:02}.cbor"), b.data.clone()))
        .collect();
    all.insert("event_verify", event_seeds);

    let stream: Vec<(Cid, Vec<u8>)> = events[..5]
        .iter()
        .map(|b| (b.cid, b.data.clone()))
        .collect();
    let raw = (cid_of(RAW, LINKED), LINKED.to_vec());
    let mut cars = Seeds::new();
    cars.insert("stream.car".into(), car(&[stream[4].0], &stream)?);
    cars.insert(
        "event-and-raw.car".into(),
        car(
            &[events[5].cid, raw.0],
            &[(events[5].cid, events[5].data.clone()), raw],
        )?,
    );
    cars.insert("empty.car".into(), car(&[], &[])?);
    all.insert("car_read", cars);

    let pair = |b: &Block| {
        (
            serde_bytes::ByteBuf::from(b.cid.to_bytes()),
            serde_bytes::ByteBuf::from(b.data.clone()),
        )
    };
    let messages = vec![
        Message::PublishRequest(PublishRequest {
            blocks: events[..2].iter().map(pair).collect(),
        }),
        Message::PublishResponse(PublishResponse::Each(vec![
            PublishAnswer::Stored {
                copies: 2,
                heads: vec![pair(&events[4]).0, pair(&events[3]).0],
            },
            PublishAnswer::Refused {
                status: 503,
                message: "no majority of the rendezvous set answered".into(),
            },
        ])),
        Message::PublishResponse(PublishResponse::Refused {
            status: 503,
            message: "no majority of the rendezvous set answered".into(),
        }),
        Message::ReplicateRequest(ReplicateRequest {
            blocks: events[..2].iter().map(pair).collect(),
        }),
        Message::ReplicateResponse(ReplicateResponse::Stored),
        Message::ReplicateResponse(ReplicateResponse::Refused("bad block".into())),
        Message::SubscribeRequest(SubscribeRequest::Lease {
            id: 42,
            filter: FILTERS[0].into(),
            lease_secs: 30,
        }),
        Message::SubscribeRequest(SubscribeRequest::Cancel { id: 42 }),
        Message::SubscribeResponse(SubscribeResponse::Ok),
        Message::SubscribeResponse(SubscribeResponse::Refused("this node is a peer".into())),
        Message::DeliverRequest(DeliverRequest {
            events: events[2..5].iter().map(pair).collect(),
            after: vec![1, 1, 2],
        }),
        Message::DeliverResponse(DeliverResponse::Ok),
        Message::DeliverResponse(DeliverResponse::Refused("bad block".into())),
        Message::HistoryRequest(HistoryRequest::DurableOpen {
            name: "buys".into(),
            filter: FILTERS[3].into(),
            since: Some(0),
        }),
        Message::HistoryRequest(HistoryRequest::DurableAck {
            name: "buys".into(),
            acks: vec![Ack {
                author: serde_bytes::ByteBuf::from(keypair(1)?.public().encode_protobuf()),
                topic: "/stocks/euronext/CTT".into(),
                seq: 2,
            }],
        }),
        Message::HistoryRequest(HistoryRequest::Query {
            filter: FILTERS[1].into(),
            durable: None,
            since: Some(1_763_700_000_000),
            cursor: 0,
            max_events: 100,
        }),
        Message::HistoryResponse(HistoryResponse::Page {
            events: events[..3].iter().map(pair).collect(),
            next: Some(3),
            acked: vec![],
        }),
        Message::HistoryResponse(HistoryResponse::Conflict("another filter".into())),
    ];
    let mut wire = Seeds::new();
    for (i, m) in messages.into_iter().enumerate() {
        let kind = m.kind();
        let index = Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .context("every kind is in Kind::ALL")?;
        // The fuzz target's first byte picks the kind.
        let mut bytes = vec![index as u8];
        bytes.extend(encode(m)?);
        wire.insert(format!("{i:02}-{kind:?}.bin"), bytes);
    }
    // /tidings/fetch/1, after the request-response kinds: a request stream, an answer stream.
    let fetch_request = FetchRequest {
        want: vec![pair(&events[4]).0],
        have: vec![pair(&events[0]).0],
        max_blocks: 100,
        max_bytes: 0,
    };
    let mut bytes = vec![Kind::ALL.len() as u8];
    bytes.extend(fetch::encode_request(&fetch_request)?);
    wire.insert("20-FetchRequest.bin".into(), bytes);
    let mut bytes = vec![Kind::ALL.len() as u8 + 1];
    for b in events[1..5].iter().rev() {
        fetch::push_block(&mut bytes, &b.cid.to_bytes(), &b.data);
    }
    bytes.extend(fetch::end_frame(&FetchEnd {
        blocks: 4,
        more: vec![pair(&events[0]).0],
        missing: vec![],
        error: None,
    }));
    wire.insert("21-FetchAnswer.bin".into(), bytes);
    all.insert("protocol_decode", wire);
    Ok(all)
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

fn read_dir(dir: &Path) -> Result<Seeds> {
    let mut out = Seeds::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let e = e?;
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path())?,
            );
        }
    }
    Ok(out)
}

#[test]
fn the_filter_seeds_parse_as_expected() {
    // The last three are deliberately bad (error paths are worth fuzzing from too).
    for (i, f) in FILTERS.iter().enumerate() {
        let ok = Filter::parse(f);
        assert_eq!(ok.is_ok(), i < FILTERS.len() - 3, "{f}: {ok:?}");
    }
}

#[test]
fn committed_seeds_are_what_the_generator_makes() -> Result<()> {
    let write = std::env::var_os("TIDINGS_WRITE_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, want) in generate()? {
        let dir = seeds_dir().join(target);
        if write {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            for (name, bytes) in &want {
                std::fs::write(dir.join(name), bytes)?;
            }
        }
        if read_dir(&dir)? != want {
            stale.push(target);
        }
    }
    ensure!(
        stale.is_empty(),
        "fuzz seeds of {stale:?} are stale: run TIDINGS_WRITE_SEEDS=1 cargo test -p tidings-tests --test fuzz_seeds"
    );
    Ok(())
}
