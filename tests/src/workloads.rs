//! The seeded workloads of the real-process tests (filters and event generators), here so that
//! `tests/tests/oracle.rs` can check the oracle against the matcher on exactly these.

/// `tests/tests/subscribe.rs`: stock orders (numbers and prices sometimes numeric strings, a
/// price sometimes `true`) and fruit, against filters in all three syntaxes.
pub mod subscribe {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use serde_json::{Value, json};

    /// The subscriptions: text, the seeds' JSON form, Mongo-style.
    pub const FILTERS: [&str; 6] = [
        // text
        r#"/stocks/** where order = "buy" and price < 10"#,
        // the seeds' JSON form
        r#"{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": ">50", "price": "<10"}"#,
        // Mongo-style
        r#"{"topic": "/stocks/*/CTT", "price": {"$gte": 5}, "order": {"$in": ["buy", "sell"]}}"#,
        "/fruits/citrus/**",
        r#"/stocks/nyse/* where number > 500 or not (order = "sell")"#,
        r#"{"topic": "/stocks/**", "$or": [{"symbol": {"$prefix": "A"}}, {"price": {"$lt": 2}}]}"#,
    ];

    const EXCHANGES: [&str; 3] = ["Euronext Lisboa", "nyse", "lse"];
    const SYMBOLS: [&str; 4] = ["CTT", "AAPL", "EDP", "ABC"];

    /// Seeded events: stock orders with numbers and prices sometimes as numeric strings, plus fruit.
    pub fn events(seed: u64, n: usize) -> Vec<(String, Value)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::new();
        for i in 0..n {
            if rng.random_range(0..5) == 0 {
                let t = ["/fruits/citrus/orange", "/fruits/citrus", "/fruits/apple"]
                    [rng.random_range(0..3)];
                out.push((t.to_string(), json!({"i": i, "ripe": rng.random_bool(0.5)})));
                continue;
            }
            let ex = EXCHANGES[rng.random_range(0..EXCHANGES.len())];
            let sym = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
            let number: Value = match rng.random_range(0..10) {
                0 => json!(rng.random_range(0..1000).to_string()),
                _ => json!(rng.random_range(0..1000)),
            };
            let price: f64 = (rng.random_range(0..2000) as f64) / 100.0;
            let price: Value = match rng.random_range(0..10) {
                0 => json!(format!("{price}")),
                1 => json!(true), // a type mismatch: never matches a numeric comparison
                _ => json!(price),
            };
            let mut body =
                json!({"i": i, "exchange": ex, "symbol": sym, "number": number, "price": price});
            if rng.random_range(0..8) != 0 {
                body["order"] = json!(if rng.random_bool(0.5) { "buy" } else { "sell" });
            }
            let topic = format!("/stocks/{}/{sym}", ex.split(' ').next().unwrap_or(ex));
            out.push((topic, body));
        }
        out
    }
}

/// `tests/tests/network.rs`: events on eight roots against filters in all three syntaxes.
pub mod network {
    use rand::RngExt;
    use rand::rngs::StdRng;
    use serde_json::{Value, json};

    /// The roots events are published on (spread over the brokers' rendezvous sets).
    pub const ROOTS: [&str; 8] = [
        "stocks", "fruits", "docs", "news", "chat", "iot", "games", "logs",
    ];

    /// The subscriptions, each on two nodes.
    pub const FILTERS: [&str; 6] = [
        r#"/stocks/** where order = "buy" and price < 10"#,
        r#"{"topic": "/stocks/**", "order": "sell", "number": ">50"}"#,
        r#"{"topic": "/fruits/*", "ripe": {"$eq": true}}"#,
        "/docs/**",
        r#"{"topic": "/news/**", "$or": [{"score": {"$gte": 90}}, {"tag": {"$in": ["a", "b"]}}]}"#,
        "/chat/room1 where msg exists",
    ];

    /// Event `i` on `root`: its topic and body, drawn from `rng`.
    pub fn body(rng: &mut StdRng, root: &str, i: usize) -> (String, Value) {
        let sym = ["A", "B", "C"][rng.random_range(0..3)];
        let topic = match root {
            "stocks" => format!("/stocks/x/{sym}"),
            "fruits" => format!("/fruits/{}", ["apple", "lime"][rng.random_range(0..2)]),
            "docs" => format!(
                "/docs/d{}/p{}",
                rng.random_range(0..3),
                rng.random_range(0..2)
            ),
            "chat" => format!("/chat/room{}", rng.random_range(1..3)),
            r => format!("/{r}/t{}", rng.random_range(0..2)),
        };
        let number: Value = if rng.random_bool(0.1) {
            json!(rng.random_range(0..100).to_string())
        } else {
            json!(rng.random_range(0..100))
        };
        let tag = ["a", "b", "c"][rng.random_range(0..3)];
        let mut b = json!({
            "i": i,
            "order": if rng.random_bool(0.5) { "buy" } else { "sell" },
            "price": rng.random_range(0..2000) as f64 / 100.0,
            "number": number,
            "ripe": rng.random_bool(0.5),
            "score": rng.random_range(0..100),
            "tag": tag,
        });
        if rng.random_bool(0.5) {
            b["msg"] = json!("hi");
        }
        (topic, b)
    }
}
