//! Property tests: JSON bodies round-trip through event blocks; decoding is canonical, and the
//! fast decoders agree with their reference definitions; any single-bit change to a block makes
//! `verify` fail.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tidings_ipld_schema::json::{ipld_to_json, json_to_ipld};
use tidings_ipld_schema::{Cid, DAG_CBOR, Event, Keypair, RAW, block, cid_of, verify};

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

/// Pieces of CBOR, canonical and not (short and long forms of one number, duplicate and
/// misordered keys, narrow floats, indefinite lengths, links), which strung together make values
/// that tell a canonical check from a sloppy one far more often than random bytes do.
fn cbor_token() -> impl Strategy<Value = Vec<u8>> {
    let link = {
        let mut t = vec![0xd8, 0x2a, 0x58, 37, 0x00];
        t.extend_from_slice(&cid_of(DAG_CBOR, b"t").to_bytes());
        t
    };
    prop_oneof![
        (0u8..24).prop_map(|n| vec![n]),
        any::<u8>().prop_map(|n| vec![0x18, n]),
        any::<u16>().prop_map(|n| [&[0x19][..], &n.to_be_bytes()].concat()),
        any::<u32>().prop_map(|n| [&[0x1a][..], &n.to_be_bytes()].concat()),
        any::<u64>().prop_map(|n| [&[0x3b][..], &n.to_be_bytes()].concat()),
        (0u8..4).prop_map(|n| vec![0xa0 + n]),
        (0u8..4).prop_map(|n| vec![0x80 + n]),
        Just(vec![0x61, b'a']),
        Just(vec![0x61, b'b']),
        Just(vec![0x62, b'a', b'a']),
        Just(vec![0x78, 0x01, b'a']),
        Just(vec![0x41, 0x00]),
        Just(vec![0xf4]),
        Just(vec![0xf6]),
        Just(vec![0xf7]),
        Just(vec![0x9f]),
        Just(vec![0xff]),
        Just(vec![0xfa, 0x3f, 0x80, 0x00, 0x00]),
        any::<f64>().prop_map(|f| [&[0xfb][..], &f.to_be_bytes()].concat()),
        Just(link),
    ]
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
            prop_assert_eq!(e.encode().expect("re-encode"), bytes.clone());
        }
        same_as_reference(&bytes);
    }

    #[test]
    fn fast_decoding_agrees_with_the_reference(
        body in arb_json(),
        prev in prop::collection::vec(arb_cid(), 0..4),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let ipld = json_to_ipld(&body).expect("convertible");
        let (_, block) = Event::sign_block(&keypair(), "/p", ipld, 7, 9, prev).expect("sign");
        let mut bytes = block.data.clone();
        for (pos, b) in edits {
            let i = pos.index(bytes.len());
            bytes[i] = b;
        }
        same_as_reference(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(e) = Event::decode(&bytes) {
            prop_assert_eq!(e.encode().expect("re-encode"), bytes.clone());
        }
        same_as_reference(&bytes);
        let _ = verify(&cid_of(DAG_CBOR, &bytes), &bytes);
        let _ = tidings_ipld_schema::car::read_car(&bytes);
    }
}

/// Integers near each boundary of CBOR's head widths, where a hand-written encoder goes wrong.
fn arb_uint() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..30,
        250u64..260,
        65_530u64..65_540,
        0xffff_fff0u64..0x1_0000_0010,
        (u64::MAX - 8)..=u64::MAX,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The event encoder that writes the fixed fields itself gives exactly the bytes (or the
    /// error) of encoding the event as a generic IPLD map, signed or not, for any field values,
    /// not only those a signer makes.
    #[test]
    fn fast_encoding_agrees_with_the_reference(
        body in arb_json(),
        v in arb_uint(),
        seq in arb_uint(),
        time in arb_uint(),
        topic in prop_oneof![topic(), any::<String>(), "[a-z]{20,300}"],
        author in prop::collection::vec(any::<u8>(), 0..300),
        sig in prop::collection::vec(any::<u8>(), 0..80),
        prev in prop::collection::vec(arb_cid(), 0..30),
    ) {
        let body = json_to_ipld(&body).expect("convertible");
        let e = Event { v, topic, body, author, seq, time, prev, sig };
        for with_sig in [false, true] {
            let fast = if with_sig { e.encode() } else { e.signing_bytes() };
            let reference = e.encode_reference(with_sig);
            prop_assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
        }
    }
}

proptest! {
    // Cheap cases (a few dozen bytes each), so many of them.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn cbor_like_token_streams_decode_as_the_reference_says(
        tokens in prop::collection::vec(cbor_token(), 1..12),
    ) {
        same_as_reference(&tokens.concat());
    }
}

/// The fast decoders give what their reference definitions give: the same event or the same
/// error, the same generic value, and the links a walk follows.
fn same_as_reference(bytes: &[u8]) {
    let fast = Event::decode(bytes);
    let reference = Event::decode_reference(bytes);
    match (&fast, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("decode {fast:?} but the reference {reference:?} for {bytes:02x?}"),
    }
    let generic = block::decode_dag_cbor(bytes).map_err(|e| e.to_string());
    let generic_reference = block::decode_dag_cbor_reference(bytes).map_err(|e| e.to_string());
    assert_eq!(generic, generic_reference, "{bytes:02x?}");
    if let Ok(event) = reference {
        // What decodes strictly is also what a store gives back, links included.
        assert_eq!(Event::decode_stored(bytes).as_ref(), Some(&event));
        let links: Vec<Cid> = event
            .prev
            .iter()
            .copied()
            .chain(event.body_links())
            .collect();
        assert_eq!(Event::links_stored(bytes), Some(links));
    }
}

/// Every byte value at every position of one fixed block (with links in `prev` and the body):
/// the fast decoders agree with the reference on each.
#[test]
fn every_byte_change_of_a_fixed_block_decodes_as_the_reference_says() {
    let body = json_to_ipld(&json!({
        "exchange": "Euronext Lisboa", "order": "buy", "number": 100, "price": 5.55,
        "neg": -300, "list": [true, null, 1.5], "link": {"/": cid_of(RAW, b"x").to_string()},
        "raw": {"/": {"bytes": "AAEC"}},
    }))
    .expect("json");
    let prev = vec![cid_of(DAG_CBOR, b"p"), cid_of(DAG_CBOR, b"q")];
    let (_, block) =
        Event::sign_block(&keypair(), "/stocks/euronext/CTT", body, 300, 1, prev).expect("sign");
    same_as_reference(&block.data);
    for i in 0..block.data.len() {
        for b in 0..=255u8 {
            let mut changed = block.data.clone();
            changed[i] = b;
            same_as_reference(&changed);
        }
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
