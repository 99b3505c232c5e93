//! Event blocks from the network or a CAR file: `Event::decode` and `verify(&cid, &bytes)`,
//! then what the node does with a block that passed (JSON for subscribers, matching).
//!
//! The input is the block; its CID is computed from it, so the fuzzer gets past the hash check
//! to the decoder, the shape checks and the signature. Checks, beyond "never panics": a decoded
//! event re-encodes to exactly the input (decoding is canonical-only), the fast decoders agree
//! with their reference definitions (`Event::decode_reference`, `decode_dag_cbor_reference`,
//! links), `verify` accepts only what decodes, and `verify_batch` (the fetch path) accepts
//! exactly what `verify` accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use tidings_ipld_schema::{
    DAG_CBOR, Error, Event, RAW, block, cid_of, json, verify, verify_batch,
};
use tidings_matcher::Filter;

static FILTER: LazyLock<Option<Filter>> =
    LazyLock::new(|| Filter::parse("/stocks/** where order = \"buy\" and price < 10").ok());

fuzz_target!(|data: &[u8]| {
    let cid = cid_of(DAG_CBOR, data);
    let decoded = Event::decode(data);
    if let Ok(event) = &decoded {
        let again = event.encode().expect("a decoded event encodes");
        assert_eq!(again, data, "decode accepted non-canonical bytes");
        assert_eq!(event.to_block().expect("block").cid, cid);
    }
    // The fast reader and the definition (decode, encode again, compare) agree.
    match (&decoded, Event::decode_reference(data)) {
        (Ok(a), Ok(b)) => assert_eq!(*a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("decode gave {a:?}, its reference {b:?}"),
    }
    assert_eq!(
        block::decode_dag_cbor(data).map_err(|e| e.to_string()),
        block::decode_dag_cbor_reference(data).map_err(|e| e.to_string()),
        "the generic decoder disagrees with its reference"
    );
    if let Ok(event) = &decoded {
        let links: Vec<_> = event.prev.iter().copied().chain(event.body_links()).collect();
        assert_eq!(Event::links_stored(data), Some(links));
    }
    let verified = verify(&cid, data);
    let batched = verify_batch([(&cid, data)]);
    assert_eq!(batched.len(), 1);
    assert_eq!(
        batched[0].is_ok(),
        verified.is_ok(),
        "verify_batch and verify disagree: {:?} vs {:?}",
        batched[0],
        verified
    );
    match verified {
        Ok(event) => {
            assert!(decoded.is_ok(), "verify accepted what decode refuses");
            assert!(event.seq >= 1);
            event
                .author_peer_id()
                .expect("a verified author is a peer id");
            let j = json::event_to_json(&cid, &event);
            if let Some(f) = FILTER.as_ref() {
                let _ = f.matches(&event.topic, &j["body"]);
            }
        }
        Err(Error::BadHash | Error::BadCodec { .. } | Error::UnsupportedHash { .. }) => {
            panic!("the CID was computed from the block")
        }
        Err(_) => {}
    }
    // The same bytes under a raw CID are refused as not an event, never decoded.
    assert!(matches!(
        verify(&cid_of(RAW, data), data),
        Err(Error::BadCodec { .. })
    ));
});
