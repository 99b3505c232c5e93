//! Interop: fixed events checked by an independent implementation (Python `dag-cbor`,
//! `multiformats`, `cryptography`; see `tests/interop/`).
//!
//! Fails, with the install line, if Python or its packages are missing. Set `TIDINGS_PYTHON` to
//! pick the interpreter (default `python3`).

use serde_json::{Value, json};
use std::process::Command;
use tidings_ipld_schema::json::{ipld_to_json, json_to_ipld};
use tidings_ipld_schema::{Cid, DAG_CBOR, Event, Keypair, RAW, cid_of, verify};

const INSTALL: &str = "pip install -r ipld-schema/tests/interop/requirements.txt";
/// The fixed ed25519 secret of every fixture.
const SECRET: [u8; 32] = *b"tidings interop fixed secret 32B";
const TIME: u64 = 1_763_700_000_000;

fn fixtures() -> Vec<(&'static str, &'static str, Value, u64, Vec<Cid>)> {
    let p1 = cid_of(DAG_CBOR, b"parent one");
    let p2 = cid_of(DAG_CBOR, b"parent two");
    let p3 = cid_of(RAW, b"a raw parent");
    let v0: Cid = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
        .parse()
        .expect("CIDv0");
    vec![
        (
            "stock-order",
            "/stocks/euronext/CTT",
            json!({"exchange": "Euronext Lisboa", "order": "buy", "number": "100", "price": 5.55}),
            1,
            vec![],
        ),
        (
            "nested-unicode-numbers",
            "/docs/ünïcødé/日本語",
            json!({
                "title": "Olá, mundo — 你好 🍊",
                "nested": {"a": {"b": {"c": [1, -1, 0, 23, 24, 255, 256, 65536, 4294967296u64]}}},
                "ints": [9223372036854775807i64, -9223372036854775808i64, 18446744073709551615u64],
                "floats": [0.1, -2.5, 1.0, 1e300, 5e-324, -0.0, 2.718281828459045e-10],
                "flags": [true, false, null],
                "": "empty key",
                "é": 1, "z": 2, "aa": 3, "ab": 4, "b": 5, "aaa": 6
            }),
            2,
            vec![p1],
        ),
        (
            "links-and-bytes",
            "/files/manifest",
            json!({
                "content": {"/": p3.to_string()},
                "v0": {"/": v0.to_string()},
                "parts": [{"/": p1.to_string()}, {"/": p2.to_string()}],
                "thumb": {"/": {"bytes": "AAECAwQFBgcICQ"}},
                "empty": {"/": {"bytes": ""}}
            }),
            7,
            vec![p2],
        ),
        (
            "multi-prev-merge",
            "/docs/shared",
            json!([{"op": "insert", "pos": 3, "text": "x"}, {"op": "delete", "pos": 10, "len": 2}]),
            42,
            vec![p1, p2, p3],
        ),
        ("scalar-body", "/a", json!("just a string"), 1, vec![]),
        ("null-body", "/a", Value::Null, 3, vec![p1, v0]),
    ]
}

#[test]
fn python_implementation_agrees_byte_for_byte() {
    let keypair = Keypair::ed25519_from_bytes(SECRET).expect("32-byte secret");
    let public_raw = keypair
        .public()
        .try_into_ed25519()
        .expect("ed25519")
        .to_bytes();
    let mut out = Vec::new();
    for (name, topic, body, seq, prev) in fixtures() {
        let ipld = json_to_ipld(&body).expect(name);
        let (event, block) =
            Event::sign_block(&keypair, topic, ipld, seq, TIME, prev.clone()).expect(name);
        assert_eq!(verify(&block.cid, &block.data).expect(name), event);
        out.push(json!({
            "name": name,
            "cid": block.cid.to_string(),
            "block_hex": hex(&block.data),
            "signing_hex": hex(&event.signing_bytes().expect(name)),
            "secret_hex": hex(&SECRET),
            "public_key_hex": hex(&public_raw),
            "topic": topic,
            "seq": seq,
            "time": TIME,
            "prev": prev.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "body": ipld_to_json(&event.body),
        }));
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-fixtures.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&out).expect("json")).expect("write fixtures");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/check.py");
    let python = std::env::var("TIDINGS_PYTHON").unwrap_or_else(|_| "python3".into());
    let result = Command::new(&python).arg(script).arg(&path).output();
    let output = match result {
        Ok(o) => o,
        Err(e) => panic!(
            "interop test needs Python 3 ({python:?} could not be started: {e}).\n\
             Install Python 3 and then: {INSTALL}\n(or set TIDINGS_PYTHON to an interpreter)"
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    if output.status.code() == Some(2) {
        panic!("interop test needs Python packages: {INSTALL}\n{stderr}");
    }
    assert!(
        output.status.success(),
        "independent implementation disagrees ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(&format!("{n}/{n} fixtures agree", n = out.len())),
        "unexpected checker output:\n{stdout}\n{stderr}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
