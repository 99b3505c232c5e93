//! The tests' oracle (`tidings_tests::oracle`, written from docs/filters.md) against the node's
//! matcher (`tidings_matcher::Filter::matches`): the document's own examples with the answers
//! the document gives, then seeded workloads where the two must agree on every (filter, event)
//! pair: random filters rendered in all three syntaxes, the matcher benchmarks' workloads and
//! the real-process tests' workloads. A disagreement is a bug in one of them or a gap in the
//! document; the failure names the filter, the event and both answers.

#[path = "../../bench/benches/common/matcher_workloads.rs"]
mod bench_workloads;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};
use tidings_tests::oracle;
use tidings_tests::workloads::{network, subscribe};

/// Pairs compared, pairs that matched, disagreements and the first few of them.
#[derive(Default)]
struct Tally {
    pairs: usize,
    matched: usize,
    disagreements: usize,
    wrong: Vec<String>,
}

impl Tally {
    /// Parses `filter` with both (both must accept it) and compares them on every event.
    fn compare(&mut self, filter: &str, events: &[(String, Value)]) -> Vec<bool> {
        let ours = oracle::Filter::parse(filter)
            .unwrap_or_else(|e| panic!("the oracle refuses {filter}: {e:#}"));
        let theirs = tidings_matcher::Filter::parse(filter)
            .unwrap_or_else(|e| panic!("the matcher refuses {filter}: {e}"));
        events
            .iter()
            .map(|(topic, body)| {
                let (want, got) = (ours.matches(topic, body), theirs.matches(topic, body));
                self.pairs += 1;
                self.matched += usize::from(want);
                if want != got {
                    self.disagreements += 1;
                    if self.wrong.len() < 20 {
                        self.wrong.push(format!(
                            "{filter}\n    on {topic} {body}: oracle {want}, matcher {got}"
                        ));
                    }
                }
                want
            })
            .collect()
    }

    /// Fails on any disagreement, or if the workload was too one-sided to tell much.
    fn check(&self, what: &str) {
        assert!(
            self.disagreements == 0,
            "{what}: the oracle and the matcher disagree on {} of {} pairs, among them:\n  {}",
            self.disagreements,
            self.pairs,
            self.wrong.join("\n  ")
        );
        assert!(
            self.matched * 50 > self.pairs && self.matched < self.pairs * 49 / 50,
            "{what}: {} of {} pairs match: the workload tests little",
            self.matched,
            self.pairs
        );
        eprintln!(
            "{what}: {} pairs agree ({} match)",
            self.pairs, self.matched
        );
    }
}

// ---- the document's examples --------------------------------------------------------------

/// Examples from docs/filters.md, with the answers the document gives.
#[test]
fn the_documents_examples_answer_as_documented() {
    let cases: &[(&str, &str, Value, bool)] = &[
        // The same filter three ways, on the seeds' message (numbers as strings).
        (
            r#"/stocks/** where exchange = "Euronext Lisboa" and order = "buy" and number > 50 and price < 10"#,
            "/stocks/euronext/CTT",
            json!({"exchange": "Euronext Lisboa", "order": "buy", "number": "100", "price": "5.55"}),
            true,
        ),
        (
            r#"{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": ">50", "price": "<10"}"#,
            "/stocks/euronext/CTT",
            json!({"exchange": "Euronext Lisboa", "order": "buy", "number": "100", "price": "5.55"}),
            true,
        ),
        (
            r#"{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": {"$gt": 50}, "price": {"$lt": 10}}"#,
            "/stocks/euronext/CTT",
            json!({"exchange": "Euronext Lisboa", "order": "buy", "number": 100, "price": 10}),
            false,
        ),
        // Topic patterns: the table.
        (
            "/stocks/euronext/CTT",
            "/stocks/euronext/CTT",
            json!({}),
            true,
        ),
        (
            "/stocks/euronext/CTT",
            "/stocks/euronext/CTT/x",
            json!({}),
            false,
        ),
        ("/stocks/*/CTT", "/stocks/nyse/CTT", json!({}), true),
        ("/stocks/*/CTT", "/stocks/CTT", json!({}), false),
        ("/stocks/*/CTT", "/stocks/a/b/CTT", json!({}), false),
        ("/stocks/**", "/stocks", json!({}), true),
        ("/stocks/**", "/stocks/euronext/CTT", json!({}), true),
        ("/stocks/**", "/bonds/x", json!({}), false),
        ("/fruits/citrus/**", "/fruits/citrus", json!({}), true),
        (
            "/fruits/citrus/**",
            "/fruits/citrus/lime/green",
            json!({}),
            true,
        ),
        ("/fruits/citrus/**", "/fruits/apple", json!({}), false),
        (
            r#""/news/top stories/**" where lang = "en""#,
            "/news/top stories/x",
            json!({"lang": "en"}),
            true,
        ),
        // The text form's operators.
        ("/a where x != 1", "/a", json!({}), true),
        ("/a where x exists", "/a", json!({"x": null}), true),
        ("/a where x exists", "/a", json!({}), false),
        ("/a where x in [1, \"b\"]", "/a", json!({"x": "b"}), true),
        ("/a where x not in [1, \"b\"]", "/a", json!({"x": 2}), true),
        ("/a where x prefix \"ab\"", "/a", json!({"x": "abc"}), true),
        ("/a where x prefix \"ab\"", "/a", json!({"x": 12}), false),
        (
            "/a where x = 1 or x = 2 and y = 3",
            "/a",
            json!({"x": 1}),
            true,
        ),
        (
            "/a where (x = 1 or x = 2) and y = 3",
            "/a",
            json!({"x": 1}),
            false,
        ),
        ("/a WHERE NOT x = 1", "/a", json!({"x": 2}), true),
        (
            "/a where x = 'caf\\u00e9'",
            "/a",
            json!({"x": "café"}),
            true,
        ),
        ("/a where x = 1e3", "/a", json!({"x": 1000}), true),
        (
            "/a where order.limit.price < 10",
            "/a",
            json!({"order": {"limit": {"price": 9}}}),
            true,
        ),
        (
            "/a where $.legs[*].price < 10",
            "/a",
            json!({"legs": [{"price": 12}, {"price": 9}]}),
            true,
        ),
        (
            "/a where $.legs[*].price < 10",
            "/a",
            json!({"legs": [{"price": 12}]}),
            false,
        ),
        (
            "/a where $[\"unit price\"] < 10",
            "/a",
            json!({"unit price": 5}),
            true,
        ),
        ("/a where $[\"k-1\"] = 1", "/a", json!({"k-1": 1}), true),
        // `!=` is `not =` over the selected values too: true when none is 10.
        (
            "/a where $.legs[*].price != 10",
            "/a",
            json!({"legs": [{"price": 10}, {"price": 9}]}),
            false,
        ),
        (
            "/a where $.legs[*].price != 10",
            "/a",
            json!({"legs": []}),
            true,
        ),
        (
            "/a where $.legs[*].price not in [10]",
            "/a",
            json!({"legs": [{"price": 10}]}),
            false,
        ),
        // A dotted path does not look inside arrays.
        (
            "/a where legs.price < 10",
            "/a",
            json!({"legs": [{"price": 9}]}),
            false,
        ),
        // The JSON forms.
        (
            r#"{"topic": "/a", "ripe": true}"#,
            "/a",
            json!({"ripe": true}),
            true,
        ),
        (
            r#"{"topic": "/a", "name": "!=x"}"#,
            "/a",
            json!({"name": "y"}),
            true,
        ),
        (
            r#"{"topic": "/a", "name": "!=x"}"#,
            "/a",
            json!({"name": "x"}),
            false,
        ),
        (
            r#"{"topic": "/a", "tag": {"$eq": "<x"}}"#,
            "/a",
            json!({"tag": "<x"}),
            true,
        ),
        (
            r#"{"topic": "/a", "order": {"side": "buy"}}"#,
            "/a",
            json!({"order": {"side": "buy"}}),
            true,
        ),
        (
            r#"{"topic": "/a", "order.side": "buy"}"#,
            "/a",
            json!({"order": {"side": "sell"}}),
            false,
        ),
        (
            r#"{"topic": "/a", "$.legs[*].price": "<10"}"#,
            "/a",
            json!({"legs": [{"price": 1}]}),
            true,
        ),
        // What follows the operator is a string, spaces trimmed; `==` is `=`.
        (
            r#"{"topic": "/a", "x": "< 10"}"#,
            "/a",
            json!({"x": 5}),
            true,
        ),
        (
            r#"{"topic": "/a", "x": "==5"}"#,
            "/a",
            json!({"x": "5.0"}),
            true,
        ),
        (
            r#"{"topic": "/a", "x": "=true"}"#,
            "/a",
            json!({"x": "true"}),
            true,
        ),
        (
            r#"{"topic": "/a", "x": "=true"}"#,
            "/a",
            json!({"x": true}),
            false,
        ),
        (
            r#"{"topic": "/a", "x": "=\"x\""}"#,
            "/a",
            json!({"x": "\"x\""}),
            true,
        ),
        (
            r#"{"topic": "/a", "x": "=\"x\""}"#,
            "/a",
            json!({"x": "x"}),
            false,
        ),
        (
            r#"{"topic": "/a", "p": {"$gt": 5, "$lt": 10}}"#,
            "/a",
            json!({"p": 10}),
            false,
        ),
        (
            r#"{"topic": "/a", "p": {"$not": {"$gt": 5}}}"#,
            "/a",
            json!({"p": 1}),
            true,
        ),
        (
            r#"{"topic": "/a", "$not": {"p": {"$gt": 5}}}"#,
            "/a",
            json!({}),
            true,
        ),
        (
            r#"{"topic": "/a", "p": {"$exists": false}}"#,
            "/a",
            json!({}),
            true,
        ),
        (
            r#"{"topic": "/a", "p": {"$nin": [1, 2]}}"#,
            "/a",
            json!({"p": "2"}),
            false,
        ),
        (
            r#"{"topic": "/a", "s": {"$prefix": "x"}}"#,
            "/a",
            json!({"s": "xy"}),
            true,
        ),
        (
            r#"{"topic": "/stocks/**", "$or": [{"price": {"$lt": 5}}, {"order": "sell"}]}"#,
            "/stocks/x",
            json!({"price": 7, "order": "sell"}),
            true,
        ),
        (
            r#"{"topic": "/a", "$and": [{"p": 1}, {"$or": [{"q": 1}, {"r": 1}]}]}"#,
            "/a",
            json!({"p": 1, "r": 1}),
            true,
        ),
        // Numbers, strings and types.
        (
            "/a where n > 9007199254740992.0",
            "/a",
            json!({"n": 9007199254740993u64}),
            true,
        ),
        ("/a where n > 50", "/a", json!({"n": "100"}), true),
        ("/a where n = 100", "/a", json!({"n": "100"}), true),
        ("/a where n = 5", "/a", json!({"n": "+5"}), false),
        ("/a where n = 5", "/a", json!({"n": "05"}), false),
        ("/a where n < 1", "/a", json!({"n": ".5"}), false),
        ("/a where n < \"m\"", "/a", json!({"n": "a"}), true),
        ("/a where n < \"m\"", "/a", json!({"n": "100"}), false),
        ("/a where n > \"m\"", "/a", json!({"n": "100"}), false),
        ("/a where n = \"1e400\"", "/a", json!({"n": "1e401"}), true),
        (
            "/a where n = 18446744073709551617",
            "/a",
            json!({"n": "18446744073709551616"}),
            true,
        ),
        ("/a where n < 10", "/a", json!({"n": "cheap"}), false),
        ("/a where n < 10", "/a", json!({}), false),
        ("/a where n != 10", "/a", json!({}), true),
        ("/a where n = null", "/a", json!({"n": null}), true),
        ("/a where n in [null]", "/a", json!({"n": null}), true),
        ("/a where n = 1", "/a", json!({"n": true}), false),
    ];
    let mut wrong = String::new();
    for (filter, topic, body, want) in cases {
        let ours = oracle::Filter::parse(filter)
            .unwrap_or_else(|e| panic!("the oracle refuses {filter}: {e:#}"))
            .matches(topic, body);
        let theirs = tidings_matcher::Filter::parse(filter)
            .unwrap_or_else(|e| panic!("the matcher refuses {filter}: {e}"))
            .matches(topic, body);
        if ours != *want || theirs != *want {
            let _ = writeln!(
                wrong,
                "{filter} on {topic} {body}: documented {want}, oracle {ours}, matcher {theirs}"
            );
        }
    }
    assert!(wrong.is_empty(), "{wrong}");
}

/// The limit on alternatives: 64 conjunctions once `or` is distributed over `and` (the oracle
/// does not model limits).
#[test]
fn the_matcher_refuses_over_64_alternatives() {
    let of = |n: usize| {
        let ors: Vec<String> = (0..n).map(|i| format!("(a{i} = 1 or b{i} = 1)")).collect();
        format!("/a where {}", ors.join(" and "))
    };
    assert!(tidings_matcher::Filter::parse(&of(6)).is_ok(), "64 refused");
    assert!(
        tidings_matcher::Filter::parse(&of(7)).is_err(),
        "128 accepted"
    );
    // `not` turns `or` into `and`: 2^7 again.
    let ands: Vec<String> = (0..7).map(|i| format!("(a{i} = 1 and b{i} = 1)")).collect();
    let negated = format!("/a where not ({})", ands.join(" or "));
    assert!(
        tidings_matcher::Filter::parse(&negated).is_err(),
        "{negated} accepted"
    );
    assert!(oracle::Filter::parse(&of(7)).is_ok());
}

/// Filters the document says are refused; the oracle refuses them too.
#[test]
fn the_oracle_refuses_what_the_document_refuses() {
    for bad in [
        "/**",
        "/*/x",
        "/a/**/b",
        "/a/",
        "a/b",
        "/a/b*",
        "/a where",
        "/stocks/** where price 10",
        "/a where (price < 10",
        "/a where x prefix 5",
        "/a where x = TRUE",
        "/a where x = 05",
        "/a where x < true",
        r#"{"topic": "/a", "x": {"$gte": null}}"#,
        r#"{"topic": "/a", "$or": []}"#,
        r#"{"topic": "/a", "$not": {}}"#,
        r#"{"topic": "/a", "x": 1, "x": 2}"#,
        r#"{"topic": "/a", "x": "!5"}"#,
        r#"{"topic": "/a", "x": "< "}"#,
        r#"{"topic": "/a", "$.x": {"y": 1}}"#,
        "/a where $.x.0 = 1",
        "/a where $.k-1 = 1",
        r#"{"topic": "/a", "$and": [{}]}"#,
        r#"{"topic": "/a", "x": {"$not": {}}}"#,
        r#"{"topic": "/a", "o": {"$.x": 1}}"#,
        r#"{"topic": "/a", "x": {"$gt": 1, "y": 2}}"#,
        r#"{"topic": "/a", "x": {}}"#,
        r#"{"topic": "/a", "x": [1]}"#,
        r#"{"topic": "/a", "x": {"$regex": "a"}}"#,
        r#"{"x": 1}"#,
        r#"{"topic": "/a", "$or": {"x": 1}}"#,
    ] {
        assert!(
            oracle::Filter::parse(bad).is_err(),
            "the oracle accepts {bad}"
        );
        assert!(
            tidings_matcher::Filter::parse(bad).is_err(),
            "the matcher accepts {bad}"
        );
    }
}

// ---- random filters in all three syntaxes -------------------------------------------------

/// A generated condition, rendered in each syntax.
#[derive(Debug, Clone)]
enum Expr {
    Pred(&'static str, Pred),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

/// A predicate; literals are kept as the JSON text they are written as.
#[derive(Debug, Clone)]
enum Pred {
    Eq(&'static str),
    Ne(&'static str),
    Cmp(&'static str, &'static str),
    In(Vec<&'static str>),
    Nin(Vec<&'static str>),
    Exists(bool),
    Prefix(&'static str),
}

/// Paths: names, a name with `-`, dotted, and JSONPath (into arrays, a quoted name).
const PATHS: [&str; 12] = [
    "a",
    "a",
    "b",
    "c",
    "k-1",
    "n.x",
    "$.l[*]",
    "$.n.x",
    "$.m[*].p",
    "$[\"u v\"]",
    "$..p",
    "$.l[-1]",
];
const LITS: [&str; 24] = [
    "-3",
    "0",
    "1",
    "2",
    "3",
    "-1.5",
    "1.5",
    "2.0",
    "1e0",
    "9007199254740993",
    "9007199254740992.0",
    "\"1\"",
    "\"2\"",
    "\"1.0\"",
    "\"2.5\"",
    "\"a\"",
    "\"ab\"",
    "\"b\"",
    "\"\"",
    "\"\\u00e9\"",
    "\"<x\"",
    "true",
    "false",
    "null",
];
/// Literals that can be ordered: numbers and strings.
const ORDERED: [&str; 17] = [
    "-3",
    "0",
    "1",
    "2",
    "3",
    "-1.5",
    "1.5",
    "2.0",
    "1e0",
    "9007199254740992.0",
    "\"1\"",
    "\"2.5\"",
    "\"a\"",
    "\"ab\"",
    "\"b\"",
    "\"\"",
    "\"B\"",
];
const PREFIXES: [&str; 6] = ["", "a", "ab", "1", "-", "\u{e9}"];
const CMP: [&str; 4] = ["<", "<=", ">", ">="];

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

fn pred(rng: &mut StdRng) -> Expr {
    let path = pick(rng, &PATHS);
    let list = |rng: &mut StdRng| {
        (0..rng.random_range(0..4))
            .map(|_| pick(rng, &LITS))
            .collect()
    };
    let p = match rng.random_range(0..20) {
        0..5 => Pred::Eq(pick(rng, &LITS)),
        5..8 => Pred::Ne(pick(rng, &LITS)),
        8..14 => Pred::Cmp(pick(rng, &CMP), pick(rng, &ORDERED)),
        14..16 => Pred::In(list(rng)),
        16 => Pred::Nin(list(rng)),
        17..19 => Pred::Exists(rng.random_bool(0.7)),
        _ => Pred::Prefix(pick(rng, &PREFIXES)),
    };
    Expr::Pred(path, p)
}

fn expr(rng: &mut StdRng, depth: u32) -> Expr {
    if depth == 0 || rng.random_bool(0.4) {
        return pred(rng);
    }
    let kids = |rng: &mut StdRng| {
        (0..rng.random_range(2..4))
            .map(|_| expr(rng, depth - 1))
            .collect()
    };
    match rng.random_range(0..5) {
        0..2 => Expr::And(kids(rng)),
        2..4 => Expr::Or(kids(rng)),
        _ => Expr::Not(Box::new(expr(rng, depth - 1))),
    }
}

/// How many conjunctions `e` expands to with `not` pushed inward and `or` distributed over
/// `and`: the matcher refuses a filter over 64 (docs/filters.md, "Limits").
fn alternatives(e: &Expr, neg: bool) -> usize {
    match e {
        Expr::Pred(..) => 1,
        Expr::Not(c) => alternatives(c, !neg),
        Expr::And(cs) | Expr::Or(cs) => {
            let each = cs.iter().map(|c| alternatives(c, neg));
            if matches!(e, Expr::And(_)) != neg {
                each.fold(1, usize::saturating_mul)
            } else {
                each.fold(0, usize::saturating_add)
            }
        }
    }
}

fn pattern(rng: &mut StdRng) -> String {
    let mut p = format!("/{}", if rng.random_bool(0.8) { "s" } else { "r" });
    for _ in 0..rng.random_range(0..4) {
        p.push('/');
        p.push_str(pick(rng, &["s", "t", "u", "*"]));
    }
    if rng.random_bool(0.5) {
        p.push_str("/**");
    }
    p
}

/// A keyword in a random case (keywords are case-insensitive).
fn kw(rng: &mut StdRng, k: &str) -> String {
    match rng.random_range(0..6) {
        0 => k.to_uppercase(),
        1 => k[..1].to_uppercase() + &k[1..],
        _ => k.to_string(),
    }
}

/// A literal in the text form: JSON, strings sometimes in single quotes.
fn text_lit(rng: &mut StdRng, l: &str) -> String {
    match l.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if rng.random_bool(0.3) => format!("'{inner}'"),
        _ => l.to_string(),
    }
}

/// Operator precedence in the text form: `or` < `and` < `not` and predicates.
fn prec(e: &Expr) -> u8 {
    match e {
        Expr::Or(_) => 1,
        Expr::And(_) => 2,
        _ => 3,
    }
}

fn text(rng: &mut StdRng, e: &Expr) -> String {
    let sub = |rng: &mut StdRng, c: &Expr, min: u8| {
        let s = text(rng, c);
        if prec(c) < min || rng.random_bool(0.1) {
            format!("({s})")
        } else {
            s
        }
    };
    match e {
        Expr::And(cs) | Expr::Or(cs) => {
            let (word, min) = if matches!(e, Expr::And(_)) {
                ("and", 2)
            } else {
                ("or", 1)
            };
            let parts: Vec<String> = cs.iter().map(|c| sub(rng, c, min)).collect();
            let sep = format!(" {} ", kw(rng, word));
            parts.join(&sep)
        }
        Expr::Not(c) => format!("{} {}", kw(rng, "not"), sub(rng, c, 3)),
        Expr::Pred(path, p) => {
            let list = |rng: &mut StdRng, ls: &[&str]| {
                let ls: Vec<String> = ls.iter().map(|l| text_lit(rng, l)).collect();
                format!("[{}]", ls.join(", "))
            };
            match p {
                Pred::Eq(l) => {
                    let op = if rng.random_bool(0.2) { "==" } else { "=" };
                    format!("{path} {op} {}", text_lit(rng, l))
                }
                Pred::Ne(l) => format!("{path} != {}", text_lit(rng, l)),
                Pred::Cmp(op, l) => {
                    // Spaces around operators are optional.
                    let sp = if rng.random_bool(0.2) { "" } else { " " };
                    format!("{path}{sp}{op}{sp}{}", text_lit(rng, l))
                }
                Pred::In(ls) => format!("{path} {} {}", kw(rng, "in"), list(rng, ls)),
                Pred::Nin(ls) => format!(
                    "{path} {} {} {}",
                    kw(rng, "not"),
                    kw(rng, "in"),
                    list(rng, ls)
                ),
                Pred::Exists(true) => format!("{path} {}", kw(rng, "exists")),
                Pred::Exists(false) => format!("{} {path} {}", kw(rng, "not"), kw(rng, "exists")),
                Pred::Prefix(s) => format!("{path} {} {}", kw(rng, "prefix"), json!(s)),
            }
        }
    }
}

/// Whether literal `l` can stand as a plain value for equality: not a string that starts like
/// a comparison.
fn plain(l: &str) -> bool {
    !l.starts_with("\"<") && !l.starts_with("\">") && !l.starts_with("\"=") && !l.starts_with("\"!")
}

/// The key and value of a predicate in the Mongo-style form: an operator object, or a plain
/// value for equality where that is not read as a comparison.
fn mongo_pred(rng: &mut StdRng, p: &Pred) -> String {
    let list = |ls: &[&str]| format!("[{}]", ls.join(", "));
    match p {
        Pred::Eq(l) if plain(l) && rng.random_bool(0.3) => l.to_string(),
        Pred::Eq(l) => format!("{{\"$eq\": {l}}}"),
        Pred::Ne(l) if rng.random_bool(0.3) => format!("{{\"$not\": {{\"$eq\": {l}}}}}"),
        Pred::Ne(l) => format!("{{\"$ne\": {l}}}"),
        Pred::Cmp(op, l) => {
            let op = match *op {
                "<" => "$lt",
                "<=" => "$lte",
                ">" => "$gt",
                _ => "$gte",
            };
            format!("{{\"{op}\": {l}}}")
        }
        Pred::In(ls) => format!("{{\"$in\": {}}}", list(ls)),
        Pred::Nin(ls) => format!("{{\"$nin\": {}}}", list(ls)),
        Pred::Exists(b) => format!("{{\"$exists\": {b}}}"),
        Pred::Prefix(s) => format!("{{\"$prefix\": {}}}", json!(s)),
    }
}

/// A `"key": value` member for a predicate on `path`; a dotted path sometimes as nested objects.
fn mongo_member(rng: &mut StdRng, path: &str, v: String) -> (String, String) {
    match path.split_once('.') {
        Some((head, tail)) if !path.starts_with('$') && rng.random_bool(0.5) => {
            (head.to_string(), format!("{{{}: {v}}}", json!(tail)))
        }
        _ => (path.to_string(), v),
    }
}

/// A condition object with `members`.
fn object(members: &[(String, String)]) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}: {v}", json!(k)))
        .collect();
    format!("{{{}}}", members.join(", "))
}

/// A `$and` or `$or` of condition objects.
fn list_of(rng: &mut StdRng, op: &str, cs: &[Expr]) -> (String, String) {
    let list: Vec<String> = cs.iter().map(|c| object(&mongo(rng, c))).collect();
    (op.to_string(), format!("[{}]", list.join(", ")))
}

/// The members of a condition object (all must hold) that mean `e`.
fn mongo(rng: &mut StdRng, e: &Expr) -> Vec<(String, String)> {
    match e {
        Expr::Pred(path, p) => {
            let v = mongo_pred(rng, p);
            vec![mongo_member(rng, path, v)]
        }
        Expr::And(cs) => {
            // Merged into this object where the keys stay distinct, else a `$and`.
            let parts: Vec<(String, String)> = cs.iter().flat_map(|c| mongo(rng, c)).collect();
            let keys: BTreeSet<&String> = parts.iter().map(|(k, _)| k).collect();
            if keys.len() == parts.len() && rng.random_bool(0.6) {
                parts
            } else {
                vec![list_of(rng, "$and", cs)]
            }
        }
        Expr::Or(cs) => vec![list_of(rng, "$or", cs)],
        Expr::Not(c) => match &**c {
            // Under a path, `$not` negates an operator object.
            Expr::Pred(path, p) if rng.random_bool(0.5) => {
                let ops = match mongo_pred(rng, p) {
                    v if v.starts_with('{') => v,
                    plain => format!("{{\"$eq\": {plain}}}"),
                };
                vec![mongo_member(rng, path, format!("{{\"$not\": {ops}}}"))]
            }
            c => vec![("$not".into(), object(&mongo(rng, c)))],
        },
    }
}

/// The seeds' flat JSON form of `e`, if it has one: a conjunction of `=`, `!=` and comparisons
/// on distinct paths, values as `"<10"` / `"!=x"` strings or plain values.
fn flat(e: &Expr) -> Option<Vec<(String, String)>> {
    let preds = match e {
        Expr::Pred(..) => vec![e],
        Expr::And(cs) => cs.iter().collect(),
        _ => return None,
    };
    let mut members = Vec::new();
    for p in preds {
        let Expr::Pred(path, p) = p else { return None };
        if members.iter().any(|(k, _)| k == path) {
            return None;
        }
        // After the operator, a string: a number as written, a string's characters (not when
        // empty or spaced at an end, which the operand's trimming would change).
        let operand = |l: &str| match serde_json::from_str::<Value>(l) {
            Ok(Value::String(s)) if !s.is_empty() && s.trim() == s => Some(s),
            Ok(Value::Number(_)) => Some(l.to_string()),
            _ => None,
        };
        let v = match p {
            Pred::Eq(l) if plain(l) => l.to_string(),
            Pred::Ne(l) => json!(format!("!={}", operand(l)?)).to_string(),
            Pred::Cmp(op, l) => json!(format!("{op}{}", operand(l)?)).to_string(),
            _ => return None,
        };
        members.push((path.to_string(), v));
    }
    Some(members)
}

fn json_filter(pattern: &str, members: &[(String, String)]) -> String {
    let mut s = format!("{{\"topic\": {}", json!(pattern));
    for (k, v) in members {
        let _ = write!(s, ", {}: {v}", json!(k));
    }
    s.push('}');
    s
}

fn value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..26) {
        0..5 => json!(rng.random_range(-3..4)),
        5 => json!(f64::from(rng.random_range(-3..4)) + 0.5),
        6 => json!(2.0),
        7 => json!(rng.random_range(-3..4).to_string()),
        8 => json!(pick(rng, &["1.0", "1e0", "2.5", "-0", "-1.5", "0.0"])),
        9 => json!(pick(
            rng,
            &["+1", "05", ".5", "1.", "inf", "NaN", " 1", "0x1"]
        )),
        10..12 => json!(pick(rng, &["a", "ab", "b", "B", "", "\u{e9}", "<x", "-a"])),
        12 => json!(9007199254740993u64),
        13 => json!(9_007_199_254_740_992.0),
        14 => json!("9007199254740993"),
        15 => json!(true),
        16 => json!(false),
        17 => Value::Null,
        18 => json!([1, "a"]),
        19 => json!({"x": 1}),
        _ => json!(pick(rng, &["a", "1", "2", "ab", "b"])),
    }
}

fn event(rng: &mut StdRng) -> (String, Value) {
    let mut topic = format!("/{}", pick(rng, &["s", "s", "s", "r", "q"]));
    for _ in 0..rng.random_range(0..5) {
        topic.push('/');
        topic.push_str(pick(rng, &["s", "t", "u"]));
    }
    let mut body = Map::new();
    for _ in 0..rng.random_range(0..7) {
        body.insert(
            pick(rng, &["a", "b", "c", "k-1", "u v", "p"]).into(),
            value(rng),
        );
    }
    if rng.random_bool(0.5) {
        body.insert("n".into(), json!({ "x": value(rng) }));
    } else if rng.random_bool(0.2) {
        body.insert("n".into(), value(rng));
    }
    if rng.random_bool(0.5) {
        let l: Vec<Value> = (0..rng.random_range(0..4)).map(|_| value(rng)).collect();
        body.insert("l".into(), Value::Array(l));
    }
    if rng.random_bool(0.4) {
        let m: Vec<Value> = (0..rng.random_range(0..4))
            .map(|_| {
                if rng.random_bool(0.8) {
                    json!({ "p": value(rng) })
                } else {
                    value(rng)
                }
            })
            .collect();
        body.insert("m".into(), Value::Array(m));
    }
    (topic, Value::Object(body))
}

/// `events`, then their bodies again on a topic `pattern` matches.
fn with_topic_of(pattern: &str, events: &[(String, Value)]) -> Vec<(String, Value)> {
    let topic = pattern.replace("/**", "").replace('*', "u");
    let again = events.iter().map(|(_, b)| (topic.clone(), b.clone()));
    events.iter().cloned().chain(again).collect()
}

/// Random filters, each written in the text form, the Mongo-style form and (where it has one)
/// the seeds' flat JSON form, against random events (on random topics, and on one the pattern
/// matches): the oracle answers the same for all the forms of a filter, and the matcher
/// answers what the oracle does for every form.
#[test]
fn random_filters_in_three_syntaxes_agree() {
    let mut tally = Tally::default();
    let mut flat_forms = 0;
    for batch in 0..100u64 {
        let mut rng = StdRng::seed_from_u64(0x0_5ac1e + batch);
        let events: Vec<(String, Value)> = (0..24).map(|_| event(&mut rng)).collect();
        for _ in 0..20 {
            let p = pattern(&mut rng);
            let e = (!rng.random_bool(0.05)).then(|| {
                loop {
                    let e = expr(&mut rng, 3);
                    if alternatives(&e, false) <= 64 {
                        break e;
                    }
                }
            });
            let mut forms = vec![];
            match &e {
                Some(e) => {
                    forms.push(format!(
                        "{p} {} {}",
                        kw(&mut rng, "where"),
                        text(&mut rng, e)
                    ));
                    forms.push(json_filter(&p, &mongo(&mut rng, e)));
                    if let Some(m) = flat(e) {
                        forms.push(json_filter(&p, &m));
                        flat_forms += 1;
                    }
                }
                None => {
                    forms.push(p.clone());
                    forms.push(json_filter(&p, &[]));
                }
            }
            // The batch's events, and the same bodies on a topic the pattern matches, so that
            // every filter's condition is put to the test.
            let events = with_topic_of(&p, &events);
            let answers: Vec<Vec<bool>> = forms.iter().map(|f| tally.compare(f, &events)).collect();
            for (f, a) in forms.iter().zip(&answers).skip(1) {
                assert_eq!(
                    a, &answers[0],
                    "the oracle answers {f} differently from {} (a generator or oracle bug)",
                    forms[0]
                );
            }
        }
    }
    assert!(flat_forms > 500, "only {flat_forms} flat JSON forms");
    tally.check("random filters");
}

// ---- the seeded workloads of the benchmarks and the real-process tests --------------------

/// The matcher benchmarks' three workloads (stock orders, a topic hierarchy, documents), their
/// events on their own topics (where few match any one subscription) and on each one's.
#[test]
fn the_matcher_benchmarks_workloads_agree() {
    for name in bench_workloads::WORKLOADS {
        let w = bench_workloads::make(name, 300, 200, 7);
        let mut tally = Tally::default();
        for s in &w.subs {
            let pattern = s.text.split(' ').next().unwrap_or_default();
            tally.compare(&s.text, &with_topic_of(pattern, &w.events));
        }
        tally.check(&format!("bench {name}"));
    }
}

/// `tests/tests/subscribe.rs` and `tests/tests/network.rs`: their filters against their seeded
/// events (the seeds those tests use, and more).
#[test]
fn the_real_process_tests_workloads_agree() {
    let mut tally = Tally::default();
    for seed in [0x5eed_0003, 1, 2, 3, 4, 5, 6, 7] {
        let events = subscribe::events(seed, 1000);
        for f in subscribe::FILTERS {
            tally.compare(f, &events);
        }
    }
    for seed in [0x3_0de5, 0x5_0de5, 1, 2, 3, 4, 5, 6] {
        let mut rng = StdRng::seed_from_u64(seed);
        let events: Vec<(String, Value)> = (0..1000)
            .map(|i| {
                let root = network::ROOTS[rng.random_range(0..network::ROOTS.len())];
                network::body(&mut rng, root, i)
            })
            .collect();
        for f in network::FILTERS {
            tally.compare(f, &events);
        }
    }
    tally.check("real-process workloads");
}
