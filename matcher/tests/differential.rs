//! Differential property tests: the parallel search tree and the counting matcher return
//! exactly what the linear scan (direct AST evaluation) returns, over random subscription sets
//! (topic patterns with `*`/`**`, `and`/`or`/`not`, every operator, dotted paths, JSONPath)
//! and random events (numeric strings, type mismatches, absent attributes), across inserts,
//! replacements and removes.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tidings_matcher::{CountingMatcher, Filter, LinearMatcher, Matcher, ParallelSearchTree};

fn lit() -> impl Strategy<Value = String> {
    prop_oneof![
        (-3i64..4).prop_map(|i| i.to_string()),
        (-3i64..4).prop_map(|i| format!("{i}.5")),
        Just("2.0".to_string()),
        Just("1e0".to_string()),
        (-3i64..4).prop_map(|i| format!("\"{i}\"")),
        Just("\"1.0\"".to_string()),
        Just("\"a\"".to_string()),
        Just("\"b\"".to_string()),
        Just("\"ab\"".to_string()),
        Just("\"\"".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
    ]
}

fn ordered_lit() -> impl Strategy<Value = String> {
    prop_oneof![
        (-3i64..4).prop_map(|i| i.to_string()),
        (-3i64..4).prop_map(|i| format!("{i}.5")),
        (-3i64..4).prop_map(|i| format!("\"{i}\"")),
        Just("\"a\"".to_string()),
        Just("\"ab\"".to_string()),
        Just("\"b\"".to_string()),
    ]
}

fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just("a"),
        4 => Just("b"),
        2 => Just("c"),
        2 => Just("n.x"),
        1 => Just("$.l[*]"),
        1 => Just("$.n.x"),
    ]
}

fn pred() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (path(), prop_oneof![Just("="), Just("!=")], lit()).prop_map(|(p, o, l)| format!("{p} {o} {l}")),
        4 => (path(), prop_oneof![Just("<"), Just("<="), Just(">"), Just(">=")], ordered_lit())
            .prop_map(|(p, o, l)| format!("{p} {o} {l}")),
        1 => (path(), prop::collection::vec(lit(), 0..3), any::<bool>()).prop_map(|(p, ls, neg)| {
            format!("{p} {}in [{}]", if neg { "not " } else { "" }, ls.join(", "))
        }),
        1 => path().prop_map(|p| format!("{p} exists")),
        1 => (path(), prop_oneof![Just(""), Just("a"), Just("1"), Just("ab")])
            .prop_map(|(p, s)| format!("{p} prefix \"{s}\"")),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    pred().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({})", v.join(" and "))),
            prop::collection::vec(inner.clone(), 2..3)
                .prop_map(|v| format!("({})", v.join(" or "))),
            inner.prop_map(|e| format!("not {e}")),
        ]
    })
}

fn seg() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("s"), Just("t"), Just("u")]
}

fn pattern() -> impl Strategy<Value = String> {
    (
        prop_oneof![3 => Just("s"), 1 => Just("r")],
        prop::collection::vec(prop_oneof![3 => seg(), 1 => Just("*")], 0..4),
        any::<bool>(),
    )
        .prop_map(|(root, segs, rest)| {
            let mut s = format!("/{root}");
            for g in segs {
                s.push('/');
                s.push_str(g);
            }
            if rest {
                s.push_str("/**");
            }
            s
        })
}

fn filter() -> impl Strategy<Value = String> {
    (pattern(), prop::option::weighted(0.85, expr())).prop_map(|(p, e)| match e {
        Some(e) => format!("{p} where {e}"),
        None => p,
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(|i| json!(i)),
        (-3i64..4).prop_map(|i| json!(i as f64 + 0.5)),
        Just(json!(2.0)),
        (-3i64..4).prop_map(|i| json!(i.to_string())),
        Just(json!("1.0")),
        Just(json!("1e0")),
        Just(json!("+1")),
        Just(json!("a")),
        Just(json!("ab")),
        Just(json!("b")),
        Just(json!("")),
        Just(json!(true)),
        Just(json!(false)),
        Just(json!(null)),
        Just(json!([1, "a"])),
        Just(json!({"x": 1})),
    ]
}

fn event() -> impl Strategy<Value = (String, Value)> {
    (
        prop_oneof![4 => Just("s"), 1 => Just("r"), 1 => Just("q")],
        prop::collection::vec(seg(), 0..5),
        prop::collection::vec(
            (
                prop_oneof![Just("a"), Just("b"), Just("c"), Just("n"), Just("l")],
                value(),
            ),
            0..6,
        ),
        prop::option::of(value()),
        prop::collection::vec(value(), 0..3),
    )
        .prop_map(|(root, segs, fields, nx, l)| {
            let mut topic = format!("/{root}");
            for g in segs {
                topic.push('/');
                topic.push_str(g);
            }
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            if let Some(x) = nx {
                m.insert("n".into(), json!({ "x": x }));
            }
            if !l.is_empty() {
                m.insert("l".into(), Value::Array(l));
            }
            (topic, Value::Object(m))
        })
}

fn check(
    pst: &ParallelSearchTree,
    cnt: &CountingMatcher,
    lin: &LinearMatcher,
    events: &[(String, Value)],
) -> Result<(), TestCaseError> {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for (t, body) in events {
        lin.match_event(t, body, &mut a);
        pst.match_event(t, body, &mut b);
        cnt.match_event(t, body, &mut c);
        prop_assert_eq!(&a, &b, "pst vs linear on {} {}", t, body);
        prop_assert_eq!(&a, &c, "counting vs linear on {} {}", t, body);
    }
    prop_assert_eq!(pst.len(), lin.len());
    prop_assert_eq!(cnt.len(), lin.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn pst_and_counting_equal_linear(
        subs in prop::collection::vec(filter(), 1..40),
        events in prop::collection::vec(event(), 1..16),
        removals in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        replacements in prop::collection::vec((any::<prop::sample::Index>(), filter()), 0..8),
    ) {
        let filters: Vec<Filter> = subs
            .iter()
            .map(|s| Filter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect();
        let mut pst = ParallelSearchTree::new();
        let mut cnt = CountingMatcher::new();
        let mut lin = LinearMatcher::new();
        for (i, f) in filters.iter().enumerate() {
            // Filter::matches is the same reference semantics as the linear scan.
            for (t, body) in &events {
                let direct = f.matches(t, body);
                let mut m = LinearMatcher::new();
                m.insert(0, f);
                let mut out = Vec::new();
                m.match_event(t, body, &mut out);
                prop_assert_eq!(direct, out == [0]);
            }
            pst.insert(i as u64, f);
            cnt.insert(i as u64, f);
            lin.insert(i as u64, f);
        }
        check(&pst, &cnt, &lin, &events)?;
        for (ix, s) in &replacements {
            let id = ix.index(filters.len()) as u64;
            let f = Filter::parse(s).unwrap();
            pst.insert(id, &f);
            cnt.insert(id, &f);
            lin.insert(id, &f);
        }
        check(&pst, &cnt, &lin, &events)?;
        for ix in &removals {
            let id = ix.index(filters.len() + 3) as u64;
            let r = lin.remove(id);
            prop_assert_eq!(pst.remove(id), r);
            prop_assert_eq!(cnt.remove(id), r);
        }
        check(&pst, &cnt, &lin, &events)?;
        // Remove everything: the tree prunes back to the bare root.
        for i in 0..filters.len() as u64 {
            pst.remove(i);
            cnt.remove(i);
            lin.remove(i);
        }
        prop_assert_eq!(pst.node_count(), 1);
        check(&pst, &cnt, &lin, &events)?;
        // And it is reusable after being emptied.
        for (i, f) in filters.iter().enumerate() {
            pst.insert(i as u64, f);
            cnt.insert(i as u64, f);
            lin.insert(i as u64, f);
        }
        check(&pst, &cnt, &lin, &events)?;
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,80}") {
        let _ = Filter::parse(&s);
        let _ = Filter::parse(&format!("/a where {s}"));
        let _ = Filter::parse(&format!("{{\"topic\": \"/a\", {s}"));
    }

    #[test]
    fn printed_filters_reparse(s in filter()) {
        let f = Filter::parse(&s).unwrap();
        let g = Filter::parse(&f.to_string()).unwrap_or_else(|e| panic!("{f}: {e}"));
        prop_assert_eq!(f.clauses(), g.clauses());
    }
}

#[test]
fn many_subscriptions_one_event() {
    // A larger fixed case: 3,000 overlapping subscriptions.
    let mut pst = ParallelSearchTree::new();
    let mut cnt = CountingMatcher::new();
    let mut lin = LinearMatcher::new();
    let ops = ["<", "<=", ">", ">=", "=", "!="];
    for i in 0..3000u64 {
        let s = format!(
            "/s/{}/** where a {} {} and b = \"{}\"",
            ["s", "t", "*"][(i % 3) as usize],
            ops[(i % 6) as usize],
            i % 17,
            ["a", "b"][(i % 2) as usize]
        );
        let f = Filter::parse(&s).unwrap();
        pst.insert(i, &f);
        cnt.insert(i, &f);
        lin.insert(i, &f);
    }
    for a in [json!(3), json!("3"), json!(3.5), json!("x"), json!(null)] {
        let body = json!({"a": a, "b": "a"});
        let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
        lin.match_event("/s/t/u", &body, &mut x);
        pst.match_event("/s/t/u", &body, &mut y);
        cnt.match_event("/s/t/u", &body, &mut z);
        assert_eq!(x, y);
        assert_eq!(x, z);
    }
}
