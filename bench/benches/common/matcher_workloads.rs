//! Seeded matcher workloads, shared by `src/bin/matcher.rs` and `benches/matcher.rs`.
//! Every subscription is produced twice: as a tidings text filter and as the equivalent
//! a-tree expression (topic segments as attributes `seg0..seg5`, segment count as `tlen`).
#![allow(dead_code)]

use a_tree::{AttributeDefinition, EventBuilder};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// One subscription in both languages.
pub struct Sub {
    pub text: String,
    pub atree: String,
}

/// A workload: subscriptions and events.
pub struct Workload {
    pub name: &'static str,
    pub subs: Vec<Sub>,
    pub events: Vec<(String, Value)>,
}

pub const WORKLOADS: [&str; 3] = ["stock", "topics", "docs"];

pub fn make(name: &str, n_subs: usize, n_events: usize, seed: u64) -> Workload {
    match name {
        "stock" => stock(n_subs, n_events, seed),
        "topics" => topics(n_subs, n_events, seed),
        _ => docs(n_subs, n_events, seed),
    }
}

/// Topic pattern pieces -> (tidings pattern, a-tree conjunction parts).
struct Topic {
    segs: Vec<Option<String>>,
    rest: bool,
}

impl Topic {
    fn text(&self) -> String {
        let mut s = String::new();
        for g in &self.segs {
            s.push('/');
            s.push_str(g.as_deref().unwrap_or("*"));
        }
        if self.rest {
            s.push_str("/**");
        }
        s
    }

    fn atree(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (i, g) in self.segs.iter().enumerate() {
            if let Some(g) = g {
                v.push(format!("seg{i} = \"{g}\""));
            }
        }
        let n = self.segs.len();
        if self.rest {
            if n > 1 {
                v.push(format!("tlen >= {n}"));
            }
        } else {
            v.push(format!("tlen = {n}"));
        }
        v
    }
}

fn sub(topic: Topic, conds: &[(String, String)]) -> Sub {
    let mut text = topic.text();
    let mut at = topic.atree();
    if !conds.is_empty() {
        text.push_str(" where ");
        text.push_str(
            &conds
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
        );
        at.extend(conds.iter().map(|c| c.1.clone()));
    }
    Sub {
        text,
        atree: at.join(" and "),
    }
}

/// A condition the same in both languages.
fn same(s: String) -> (String, String) {
    (s.clone(), s)
}

fn seg_defs(extra: Vec<AttributeDefinition>) -> Vec<AttributeDefinition> {
    let mut v: Vec<AttributeDefinition> = (0..6)
        .map(|i| AttributeDefinition::string(&format!("seg{i}")))
        .collect();
    v.push(AttributeDefinition::integer("tlen"));
    v.extend(extra);
    v
}

/// a-tree attribute definitions for a workload.
pub fn atree_attributes(name: &str) -> Vec<AttributeDefinition> {
    match name {
        "stock" => seg_defs(vec![
            AttributeDefinition::string("exchange"),
            AttributeDefinition::string("symbol"),
            AttributeDefinition::string("order"),
            AttributeDefinition::integer("number"),
            AttributeDefinition::float("price"),
        ]),
        "topics" => seg_defs(vec![]),
        _ => seg_defs(vec![
            AttributeDefinition::string("author"),
            AttributeDefinition::string("kind"),
            AttributeDefinition::integer("rev"),
        ]),
    }
}

fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Converts an event for a-tree (part of its measured cost, as it would be for a user):
/// topic segments, segment count, and the typed body fields (numeric strings parsed).
pub fn atree_event(b: &mut EventBuilder<'_>, name: &str, topic: &str, body: &Value) {
    let segs: Vec<&str> = topic[1..].split('/').collect();
    for (i, s) in segs.iter().enumerate().take(6) {
        let _ = b.with_string(SEG_NAMES[i], s);
    }
    let _ = b.with_integer("tlen", segs.len() as i64);
    let str_field = |b: &mut EventBuilder<'_>, k: &str| {
        if let Some(s) = body.get(k).and_then(Value::as_str) {
            let _ = b.with_string(k, s);
        }
    };
    match name {
        "stock" => {
            for k in ["exchange", "symbol", "order"] {
                str_field(b, k);
            }
            if let Some(n) = body.get("number").and_then(num_of) {
                let _ = b.with_integer("number", n as i64);
            }
            if let Some(p) = body.get("price").and_then(num_of) {
                let _ = b.with_float("price", (p * 100.0).round() as i64, 2);
            }
        }
        "docs" => {
            for k in ["author", "kind"] {
                str_field(b, k);
            }
            if let Some(n) = body.get("rev").and_then(Value::as_i64) {
                let _ = b.with_integer("rev", n);
            }
        }
        _ => {}
    }
}

/// Segment names for a-tree's attributes, precomputed so event conversion does not format.
pub const SEG_NAMES: [&str; 6] = ["seg0", "seg1", "seg2", "seg3", "seg4", "seg5"];

pub const EXCHANGES: [&str; 5] = ["euronext", "nyse", "nasdaq", "lse", "xetra"];
pub const SYMBOLS: usize = 500;

fn symbol(i: usize) -> String {
    format!("S{i:03}")
}

/// `stock`: events on `/stocks/{exchange}/{symbol}` (5 exchanges, 500 symbols, symbol i
/// listed on exchange i % 5); body `{exchange, symbol, order: buy|sell, number: 1..=1000
/// (10% as numeric strings), price: 0.01..100.00 (10% as numeric strings)}`.
///
/// Subscriptions (price bounds on a 0.5 grid, number bounds on a 10 grid):
/// * 30% `/stocks/{ex}/{sym}` [+ `order = o` (50%)] [+ a one- or two-sided price range (60%)]
/// * 25% `/stocks/{ex}/** where symbol = s and order = o and price < p`
/// * 20% `/stocks/** where symbol = s and number > n` \[+ `price >= p` (30%)\]
/// * 10% `/stocks/*/{sym} where price > lo and price < hi`
/// * 10% `/stocks/** where exchange = x and order = "buy" and number > 500.. and price < ..20`
///   (the seeds' shape)
/// * 5% `/stocks/{ex}/* where order = o and price > 95..`
pub fn stock(n_subs: usize, n_events: usize, seed: u64) -> Workload {
    let mut r = StdRng::seed_from_u64(seed);
    let mut subs = Vec::with_capacity(n_subs);
    let order = |r: &mut StdRng| if r.random_bool(0.5) { "buy" } else { "sell" };
    let half = |r: &mut StdRng, lo: u32, hi: u32| f64::from(r.random_range(lo * 2..=hi * 2)) / 2.0;
    for _ in 0..n_subs {
        let si = r.random_range(0..SYMBOLS);
        let sym = symbol(si);
        let ex = EXCHANGES[si % 5];
        let pick = r.random_range(0..100);
        let lit = |s: &str| Some(s.to_string());
        let s = if pick < 30 {
            let mut c = Vec::new();
            if r.random_bool(0.5) {
                c.push(same(format!("order = \"{}\"", order(&mut r))));
            }
            if r.random_bool(0.6) {
                match r.random_range(0..3) {
                    0 => c.push(same(format!("price < {:.1}", half(&mut r, 1, 100)))),
                    1 => c.push(same(format!("price > {:.1}", half(&mut r, 1, 100)))),
                    _ => {
                        let lo = half(&mut r, 0, 50);
                        let hi = lo + half(&mut r, 1, 50);
                        c.push(same(format!("price >= {lo:.1}")));
                        c.push(same(format!("price <= {hi:.1}")));
                    }
                }
            }
            sub(
                Topic {
                    segs: vec![lit("stocks"), lit(ex), Some(sym)],
                    rest: false,
                },
                &c,
            )
        } else if pick < 55 {
            let c = [
                same(format!("symbol = \"{sym}\"")),
                same(format!("order = \"{}\"", order(&mut r))),
                same(format!("price < {:.1}", half(&mut r, 1, 100))),
            ];
            sub(
                Topic {
                    segs: vec![lit("stocks"), lit(ex)],
                    rest: true,
                },
                &c,
            )
        } else if pick < 75 {
            let mut c = vec![
                same(format!("symbol = \"{sym}\"")),
                same(format!("number > {}", r.random_range(0..100) * 10)),
            ];
            if r.random_bool(0.3) {
                c.push(same(format!("price >= {:.1}", half(&mut r, 1, 100))));
            }
            sub(
                Topic {
                    segs: vec![lit("stocks")],
                    rest: true,
                },
                &c,
            )
        } else if pick < 85 {
            let lo = half(&mut r, 0, 70);
            let hi = lo + half(&mut r, 1, 30);
            let c = [
                same(format!("price > {lo:.1}")),
                same(format!("price < {hi:.1}")),
            ];
            sub(
                Topic {
                    segs: vec![lit("stocks"), None, Some(sym)],
                    rest: false,
                },
                &c,
            )
        } else if pick < 95 {
            let x = EXCHANGES[r.random_range(0..5)];
            let c = [
                same(format!("exchange = \"{x}\"")),
                same("order = \"buy\"".to_string()),
                same(format!("number > {}", r.random_range(50..100) * 10)),
                same(format!("price < {:.1}", half(&mut r, 1, 20))),
            ];
            sub(
                Topic {
                    segs: vec![lit("stocks")],
                    rest: true,
                },
                &c,
            )
        } else {
            let c = [
                same(format!("order = \"{}\"", order(&mut r))),
                same(format!("price > {:.1}", half(&mut r, 95, 100))),
            ];
            sub(
                Topic {
                    segs: vec![lit("stocks"), lit(ex), None],
                    rest: false,
                },
                &c,
            )
        };
        subs.push(s);
    }
    let mut events = Vec::with_capacity(n_events);
    for _ in 0..n_events {
        let si = r.random_range(0..SYMBOLS);
        let ex = EXCHANGES[si % 5];
        let sym = symbol(si);
        let number: u32 = r.random_range(1..=1000);
        let cents: u32 = r.random_range(1..=10_000);
        let price = f64::from(cents) / 100.0;
        let number = if r.random_bool(0.1) {
            json!(number.to_string())
        } else {
            json!(number)
        };
        let price = if r.random_bool(0.1) {
            json!(format!("{price:.2}"))
        } else {
            json!(price)
        };
        let body = json!({
            "exchange": ex,
            "symbol": sym,
            "order": order(&mut r),
            "number": number,
            "price": price,
        });
        events.push((format!("/stocks/{ex}/{sym}"), body));
    }
    Workload {
        name: "stock",
        subs,
        events,
    }
}

const LEVELS: [char; 5] = ['a', 'b', 'c', 'd', 'e'];

/// `topics`: a 5-level hierarchy under `/t`, fan-out 10 (`/t/a3/b7/c0/d2/e9`, 100,000 leaves).
/// Events: 70% on leaves, 30% on an inner topic (depth 1-4). Subscriptions are topic-only:
/// depth 1-5 (weighted 2/8/20/30/40%), each level below the first literal (80%) or `*` (20%),
/// then `/**` (50%) or nothing.
pub fn topics(n_subs: usize, n_events: usize, seed: u64) -> Workload {
    let mut r = StdRng::seed_from_u64(seed);
    let mut subs = Vec::with_capacity(n_subs);
    for _ in 0..n_subs {
        let w = r.random_range(0..100);
        let d = match w {
            0..2 => 1,
            2..10 => 2,
            10..30 => 3,
            30..60 => 4,
            _ => 5,
        };
        let mut segs = vec![Some("t".to_string())];
        for (l, c) in LEVELS.iter().enumerate().take(d) {
            if l > 0 && r.random_bool(0.2) {
                segs.push(None);
            } else {
                segs.push(Some(format!("{c}{}", r.random_range(0..10))));
            }
        }
        let rest = r.random_bool(0.5);
        subs.push(sub(Topic { segs, rest }, &[]));
    }
    let mut events = Vec::with_capacity(n_events);
    for _ in 0..n_events {
        let d = if r.random_bool(0.7) {
            5
        } else {
            r.random_range(1..5)
        };
        let mut t = "/t".to_string();
        for c in LEVELS.iter().take(d) {
            t.push_str(&format!("/{c}{}", r.random_range(0..10)));
        }
        events.push((t, json!({"seq": r.random_range(0..1_000_000)})));
    }
    Workload {
        name: "topics",
        subs,
        events,
    }
}

/// `docs`: 100,000 documents `/docs/f{folder}/d{doc}` (1,000 folders of 100). Events: a
/// random document, body `{author: u0..u999, kind: edit|comment|presence, rev}`.
/// Subscriptions: 60% one document; 15% one document `where kind = "edit"`; 15% a folder
/// (`/docs/fX/**`); 10% a folder `where kind != "presence"`.
pub fn docs(n_subs: usize, n_events: usize, seed: u64) -> Workload {
    let mut r = StdRng::seed_from_u64(seed);
    let mut subs = Vec::with_capacity(n_subs);
    let lit = |s: String| Some(s);
    for _ in 0..n_subs {
        let f = r.random_range(0..1000);
        let d = r.random_range(0..100);
        let pick = r.random_range(0..100);
        let s = match pick {
            0..75 => {
                let c = if pick >= 60 {
                    vec![same("kind = \"edit\"".to_string())]
                } else {
                    vec![]
                };
                sub(
                    Topic {
                        segs: vec![
                            lit("docs".into()),
                            lit(format!("f{f}")),
                            lit(format!("d{d}")),
                        ],
                        rest: false,
                    },
                    &c,
                )
            }
            75..90 => sub(
                Topic {
                    segs: vec![lit("docs".into()), lit(format!("f{f}"))],
                    rest: true,
                },
                &[],
            ),
            _ => sub(
                Topic {
                    segs: vec![lit("docs".into()), lit(format!("f{f}"))],
                    rest: true,
                },
                &[(
                    "kind != \"presence\"".to_string(),
                    "kind <> \"presence\"".to_string(),
                )],
            ),
        };
        subs.push(s);
    }
    let kinds = ["edit", "comment", "presence"];
    let mut events = Vec::with_capacity(n_events);
    for _ in 0..n_events {
        let f = r.random_range(0..1000);
        let d = r.random_range(0..100);
        let body = json!({
            "author": format!("u{}", r.random_range(0..1000)),
            "kind": kinds[r.random_range(0..3)],
            "rev": r.random_range(1..10_000),
        });
        events.push((format!("/docs/f{f}/d{d}"), body));
    }
    Workload {
        name: "docs",
        subs,
        events,
    }
}
