//! Criterion benches for the matcher hot paths: parsing, matching one event (pst beside the
//! counting baseline), and insert + remove.

#[path = "common/matcher_workloads.rs"]
mod workloads;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tidings_matcher::{CountingMatcher, Filter, Matcher, ParallelSearchTree};

fn parse(c: &mut Criterion) {
    let text = r#"/stocks/** where exchange = "Euronext Lisboa" and order = "buy" and number > 50 and price < 10"#;
    let seeds = r#"{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": ">50", "price": "<10"}"#;
    let mongo =
        r#"{"topic": "/stocks/**", "price": {"$lt": 10}, "order": {"$in": ["buy", "sell"]}}"#;
    c.bench_function("parse/text", |b| b.iter(|| Filter::parse(black_box(text))));
    c.bench_function("parse/seeds_json", |b| {
        b.iter(|| Filter::parse(black_box(seeds)))
    });
    c.bench_function("parse/mongo", |b| {
        b.iter(|| Filter::parse(black_box(mongo)))
    });
}

fn build<M: Matcher + Default>(w: &workloads::Workload) -> M {
    let mut m = M::default();
    for (i, s) in w.subs.iter().enumerate() {
        m.insert(i as u64, &Filter::parse(&s.text).expect("workload filter"));
    }
    m
}

fn matching(c: &mut Criterion) {
    for name in workloads::WORKLOADS {
        let w = workloads::make(name, 100_000, 1024, 7);
        let pst: ParallelSearchTree = build(&w);
        let mut out = Vec::new();
        let mut k = 0;
        c.bench_function(&format!("match/pst/{name}/100k"), |b| {
            b.iter(|| {
                let (t, body) = &w.events[k % w.events.len()];
                k += 1;
                pst.match_event(t, body, &mut out);
                out.len()
            })
        });
        if name == "stock" {
            let cnt: CountingMatcher = build(&w);
            c.bench_function("match/counting/stock/100k", |b| {
                b.iter(|| {
                    let (t, body) = &w.events[k % w.events.len()];
                    k += 1;
                    cnt.match_event(t, body, &mut out);
                    out.len()
                })
            });
        }
    }
}

fn churn(c: &mut Criterion) {
    let w = workloads::make("stock", 100_000, 16, 7);
    let filters: Vec<Filter> = w
        .subs
        .iter()
        .take(1000)
        .map(|s| Filter::parse(&s.text).expect("workload filter"))
        .collect();
    let mut pst: ParallelSearchTree = build(&w);
    let mut k = 0usize;
    c.bench_function("churn/pst/stock/100k insert+remove", |b| {
        b.iter(|| {
            let id = 1_000_000 + k as u64;
            pst.insert(id, &filters[k % filters.len()]);
            k += 1;
            pst.remove(id)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = parse, matching, churn
}
criterion_main!(benches);
