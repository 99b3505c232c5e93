//! The seeds' stock example (002, "Subscription Model"), in all three syntaxes, through
//! `Filter::matches` and all three matchers; and a near miss of each predicate.

use serde_json::{Value, json};
use tidings_matcher::{CountingMatcher, Filter, LinearMatcher, Matcher, ParallelSearchTree};

const TOPIC: &str = "/stocks/euronext/CTT";

fn message() -> Value {
    json!({
        "exchange": "Euronext Lisboa",
        "company": "CTT",
        "order": "buy",
        "number": "100",
        "price": "5.55",
    })
}

const TEXT: &str = r#"/stocks/** where exchange = "Euronext Lisboa" and order = "buy" and number > 50 and price < 10"#;
const SEEDS_JSON: &str = r#"{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": ">50", "price": "<10"}"#;
const MONGO: &str = r#"{"topic": "/stocks/**", "exchange": {"$eq": "Euronext Lisboa"}, "order": {"$in": ["buy"]}, "number": {"$gt": 50}, "price": {"$lt": 10}}"#;

fn all_agree(filter: &Filter, topic: &str, body: &Value) -> bool {
    let direct = filter.matches(topic, body);
    let mut out = Vec::new();
    let mut pst = ParallelSearchTree::new();
    let mut cnt = CountingMatcher::new();
    let mut lin = LinearMatcher::new();
    for m in [&mut pst as &mut dyn Matcher, &mut cnt, &mut lin] {
        m.insert(7, filter);
        m.match_event(topic, body, &mut out);
        assert_eq!(out == [7], direct, "{filter} on {topic} {body}");
    }
    direct
}

fn filters() -> Vec<Filter> {
    [TEXT, SEEDS_JSON, MONGO]
        .iter()
        .map(|s| Filter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

#[test]
fn the_three_syntaxes_compile_to_the_same_dnf() {
    let f = filters();
    // The Mongo form uses `$in` where the others use `=`; compare the text and seeds forms
    // exactly and the Mongo form by behaviour (below).
    assert_eq!(f[0].clauses(), f[1].clauses());
    assert_eq!(f[0].topic(), f[2].topic());
}

#[test]
fn seeds_message_matches() {
    for f in filters() {
        assert!(all_agree(&f, TOPIC, &message()), "{f}");
    }
}

#[test]
fn near_misses_do_not_match() {
    let mut cases: Vec<(&str, &str, Value)> = Vec::new();
    let mut with = |what: &'static str, key: &str, v: Value| {
        let mut m = message();
        m[key] = v;
        cases.push((what, TOPIC, m));
    };
    with("other exchange", "exchange", json!("Euronext Paris"));
    with("sell", "order", json!("sell"));
    with("number 50", "number", json!("50"));
    with("number 50 as JSON number", "number", json!(50));
    with("number not numeric", "number", json!("lots"));
    with("price 10", "price", json!("10"));
    with("price 10.0 as JSON number", "price", json!(10.0));
    with("price wrong type", "price", json!(true));
    for key in ["exchange", "order", "number", "price"] {
        let mut m = message();
        m.as_object_mut().unwrap().remove(key);
        cases.push(("absent field", TOPIC, m));
    }
    cases.push(("topic off", "/bonds/euronext/CTT", message()));
    cases.push(("topic root prefix only", "/stocksx/euronext/CTT", message()));
    cases.push(("malformed topic", "stocks/euronext/CTT", message()));
    for f in filters() {
        for (what, topic, body) in &cases {
            assert!(
                !all_agree(&f, topic, body),
                "{what}: {f} matched {topic} {body}"
            );
        }
    }
}

#[test]
fn numeric_rules() {
    let m = message();
    for (filter, expect) in [
        (r#"/stocks/** where number = 100"#, true),
        (r#"/stocks/** where number = "100""#, true),
        (r#"/stocks/** where number = 100.0"#, true),
        (r#"/stocks/** where number = "1e2""#, true),
        (r#"/stocks/** where price = 5.55"#, true),
        (r#"/stocks/** where price >= 5.55 and price <= 5.55"#, true),
        (r#"/stocks/** where company > "CTU""#, false),
        (
            r#"/stocks/** where company < "CTU" and company > "CTS""#,
            true,
        ),
        (r#"/stocks/** where company < 5"#, false),
        (r#"/stocks/** where number < "abc""#, false),
        (r#"/stocks/** where number != 100"#, false),
        (r#"/stocks/** where missing != 100"#, true),
        (r#"/stocks/** where not missing exists"#, true),
        (r#"/stocks/** where missing exists"#, false),
        (r#"/stocks/** where number prefix "10""#, true),
        (r#"/stocks/** where order in ["sell", "buy"]"#, true),
        (r#"/stocks/** where order not in ["sell", "buy"]"#, false),
        (r#"/stocks/** where number in [100]"#, true),
        (
            r#"/stocks/** where (order = "sell" or price < 6) and not company = "EDP""#,
            true,
        ),
        (r#"/stocks/euronext/* where order = "buy""#, true),
        (r#"/stocks/*/CTT/** where order = "buy""#, true),
        (r#"/stocks/* where order = "buy""#, false),
        ("/stocks", false),
        ("/stocks/euronext/CTT", true),
    ] {
        let f = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(all_agree(&f, TOPIC, &m), expect, "{filter}");
    }
}

#[test]
fn jsonpath_any_semantics() {
    let body = json!({"legs": [{"price": 12}, {"price": "8.5"}], "meta": {"desk": "A"}});
    for (filter, expect) in [
        (r#"/x where $.legs[*].price < 10"#, true),
        (r#"/x where $.legs[*].price < 8"#, false),
        (r#"/x where $.legs[*].price != 12"#, false),
        (r#"/x where $.legs[*].price > 100 or meta.desk = "A""#, true),
        (r#"/x where $.nothing exists"#, false),
        (r#"/x where not $.nothing exists"#, true),
        (r#"{"topic": "/x", "$.legs[*].price": {"$lt": 10}}"#, true),
        (r#"{"topic": "/x", "meta": {"desk": "A"}}"#, true),
        (r#"{"topic": "/x", "meta.desk": {"$prefix": "B"}}"#, false),
    ] {
        let f = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(all_agree(&f, "/x", &body), expect, "{filter}");
    }
}

#[test]
fn literal_operator_strings() {
    let body = json!({"tag": "<x", "n": ">50"});
    let f = Filter::parse(r#"{"topic": "/t", "tag": {"$eq": "<x"}}"#).unwrap();
    assert!(all_agree(&f, "/t", &body));
    let f = Filter::parse(r#"{"topic": "/t", "n": ">50"}"#).unwrap();
    assert!(!all_agree(&f, "/t", &body));
    let f = Filter::parse(r#"{"topic": "/t", "n": {"$eq": ">50"}}"#).unwrap();
    assert!(all_agree(&f, "/t", &body));
}

#[test]
fn root_and_display() {
    let f = Filter::parse(TEXT).unwrap();
    assert_eq!(f.root(), "stocks");
    let again = Filter::parse(&f.to_string()).unwrap();
    assert_eq!(again.clauses(), f.clauses());
    assert_eq!(Filter::parse("/a/b/**").unwrap().root(), "a");
}
