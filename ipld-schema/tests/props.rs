//! Property tests: JSON bodies round-trip through event blocks; decoding is canonical; any
//! single-bit change to a block makes `verify` fail.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tidings_ipld_schema::json::{ipld_to_json, json_to_ipld};
use tidings_ipld_schema::{Cid, DAG_CBOR, Event, Keypair, RAW, cid_of, verify};

fn keypair() -> Keypair {
    Keypair::ed25519_from_bytes([9u8; 32]).expect("32-byte secret")
}

fn arb_cid() -> impl Strategy<Value = Cid> {
    (prop::collection::vec(any::<u8>(), 0..16), any::<bool>())
        .prop_map(|(d, raw)| cid_of(if raw { RAW } else { DAG_CBOR }, &d))
}

/// Any JSON value our bodies carry: nested maps/arrays, ints (i64 and u64), finite floats,
/// unicode strings, DAG-JSON links and bytes.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (-1000i32..1000).prop_map(|i| json!(f64::from(i) / 4.0)),
        any::<String>().prop_map(Value::String),
        arb_cid().prop_map(|c| json!({"/": c.to_string()})),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| json!({"/": {"bytes": STANDARD_NO_PAD.encode(b)}})),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_filter("a lone \"/\" key is DAG-JSON's reserved form", |m| {
                    !(m.len() == 1 && m.contains_key("/"))
                })
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec("[^/*\\p{Cc}]{1,12}", 1..5).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn json_body_round_trips_through_a_block(
        body in arb_json(),
        topic in topic(),
        seq in 1u64..,
        time in any::<u64>(),
        prev in prop::collection::vec(arb_cid(), 0..4),
    ) {
        let ipld = json_to_ipld(&body).expect("convertible");
        prop_assert_eq!(ipld_to_json(&ipld), body.clone());
        let (event, block) = Event::sign_block(&keypair(), &topic, ipld, seq, time, prev.clone())
            .expect("sign");
        let decoded = verify(&block.cid, &block.data).expect("verifies");
        prop_assert_eq!(&decoded, &event);
        prop_assert_eq!(ipld_to_json(&decoded.body), body);
        prop_assert_eq!(decoded.encode().expect("re-encode"), block.data.clone());
        prop_assert_eq!(decoded.prev, prev);
    }

    #[test]
    fn any_single_bit_flip_fails_verification(
        body in arb_json(),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let ipld = json_to_ipld(&body).expect("convertible");
        let (_, block) = Event::sign_block(&keypair(), "/p/q", ipld, 3, 5, vec![]).expect("sign");
        let mut bad = block.data.clone();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        // Against the original CID: the hash no longer matches.
        prop_assert!(verify(&block.cid, &bad).is_err());
        // Even re-addressed under its own CID, the altered block must not verify.
        prop_assert!(verify(&cid_of(DAG_CBOR, &bad), &bad).is_err(), "flip at {} bit {} verified", i, bit);
    }

    #[test]
    fn whatever_decodes_re_encodes_identically(
        body in arb_json(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let ipld = json_to_ipld(&body).expect("convertible");
        let (_, block) = Event::sign_block(&keypair(), "/p", ipld, 1, 0, vec![]).expect("sign");
        let mut bytes = block.data.clone();
        for (pos, b) in edits {
            let i = pos.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(e) = Event::decode(&bytes) {
            prop_assert_eq!(e.encode().expect("re-encode"), bytes);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(e) = Event::decode(&bytes) {
            prop_assert_eq!(e.encode().expect("re-encode"), bytes.clone());
        }
        let _ = verify(&cid_of(DAG_CBOR, &bytes), &bytes);
        let _ = tidings_ipld_schema::car::read_car(&bytes);
    }
}

/// Every position and every bit of one fixed block, exhaustively.
#[test]
fn every_bit_of_a_fixed_block_matters() {
    let body = json_to_ipld(&json!({
        "exchange": "Euronext Lisboa", "order": "buy", "number": 100, "price": 5.55,
        "link": {"/": cid_of(RAW, b"x").to_string()}, "raw": {"/": {"bytes": "AAEC"}},
    }))
    .expect("json");
    let prev = vec![cid_of(DAG_CBOR, b"p")];
    let (_, block) =
        Event::sign_block(&keypair(), "/stocks/euronext/CTT", body, 2, 1, prev).expect("sign");
    for i in 0..block.data.len() {
        for bit in 0..8 {
            let mut bad = block.data.clone();
            bad[i] ^= 1 << bit;
            assert!(verify(&block.cid, &bad).is_err());
            assert!(
                verify(&cid_of(DAG_CBOR, &bad), &bad).is_err(),
                "flip at {i} bit {bit} still verifies"
            );
        }
    }
}
