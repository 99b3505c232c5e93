//! The filter parser, all three syntaxes (text; the seeds' JSON form; Mongo-style JSON), plus
//! what a broker does with a filter it accepted: print it, insert it into every matcher and
//! match events with it. Checks, beyond "never panics":
//!
//! * an accepted filter's text form (`Display`) parses again and prints the same (so what the
//!   node logs and reports is a faithful filter);
//! * the parallel search tree and the counting matcher agree with direct evaluation of the AST
//!   on a few fixed events (the differential property tests, on fuzzer-made filters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::sync::LazyLock;
use tidings_matcher::{CountingMatcher, Filter, Matcher, ParallelSearchTree};

/// Events shaped like the seeds' and the tests' (stock orders, nested maps, lists, numbers in
/// strings, type mismatches), on topics of one to three segments.
static EVENTS: LazyLock<Vec<(&'static str, Value)>> = LazyLock::new(|| {
    vec![
        (
            "/stocks/euronext/CTT",
            json!({"exchange": "Euronext Lisboa", "order": "buy", "number": "100", "price": 5.55}),
        ),
        (
            "/stocks/nyse/IBM",
            json!({"order": "sell", "number": 7, "price": 12}),
        ),
        (
            "/a",
            json!({"a": 1, "b": "x", "c": null, "n": {"x": 2.5, "y": [1, "2"]}, "l": [{"price": 3}, {"price": 11}]}),
        ),
        (
            "/a/b/c",
            json!({"a": "1", "b": true, "legs": [{"price": 9.5}], "s": "abc"}),
        ),
        (
            "/fruits/citrus/orange",
            json!({"ripe": true, "kg": 1e3, "tags": ["x", "y"]}),
        ),
        ("/x", json!([1, 2, 3])),
        ("/x/y", json!("just a string")),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = Filter::parse(src) else {
        return;
    };
    let shown = filter.to_string();
    let again = Filter::parse(&shown)
        .unwrap_or_else(|e| panic!("{src:?} printed as {shown:?}, which does not parse: {e}"));
    assert_eq!(
        again.to_string(),
        shown,
        "printing is not a fixpoint for {src:?}"
    );

    let mut pst = ParallelSearchTree::new();
    let mut counting = CountingMatcher::new();
    pst.insert(1, &filter);
    counting.insert(1, &filter);
    let mut out = Vec::new();
    for (topic, body) in EVENTS.iter() {
        let want = filter.matches(topic, body);
        pst.match_event(topic, body, &mut out);
        assert_eq!(
            !out.is_empty(),
            want,
            "pst vs AST: {src:?} on {topic} {body}"
        );
        counting.match_event(topic, body, &mut out);
        assert_eq!(
            !out.is_empty(),
            want,
            "counting vs AST: {src:?} on {topic} {body}"
        );
        // The printed filter means the same thing.
        assert_eq!(
            again.matches(topic, body),
            want,
            "{src:?} vs {shown:?} on {topic} {body}"
        );
    }
    assert!(pst.remove(1) && pst.is_empty());
    assert!(counting.remove(1) && counting.is_empty());
});
