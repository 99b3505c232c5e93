//! The seeded stock orders every benchmarked system carries, byte for byte, and the content
//! filter the `filter` scenario asks for.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

/// Event ids at or above this mark are readiness probes, not measured events.
pub const PROBE_BASE: u64 = 1 << 40;

/// The content filter in tidings' text syntax; the peers cannot filter on content, so their
/// subscribers take every event and apply [`useful`] themselves.
pub const TIDINGS_FILTER: &str = r#"/stocks/** where price < 10 and order = "buy""#;

/// (topic segment, exchange name, currency). Eight exchanges × [`SYMBOLS`] symbols give 256
/// topics, enough for 256 publishing lanes that each own their topics (tidings orders events per
/// (author, topic), so one topic is never published from two lanes at once).
const EXCHANGES: [(&str, &str, &str); 8] = [
    ("euronext", "Euronext Lisboa", "EUR"),
    ("nyse", "New York Stock Exchange", "USD"),
    ("nasdaq", "Nasdaq Global Select", "USD"),
    ("lse", "London Stock Exchange", "GBP"),
    ("xetra", "Deutsche Boerse Xetra", "EUR"),
    ("tse", "Tokyo Stock Exchange", "JPY"),
    ("hkex", "Hong Kong Exchanges", "HKD"),
    ("asx", "Australian Securities Exchange", "AUD"),
];
/// Symbols per exchange.
pub const SYMBOLS: usize = 32;
/// Distinct topics the generator uses.
pub const TOPICS: usize = EXCHANGES.len() * SYMBOLS;

/// One seeded stock order.
#[derive(Clone, Debug)]
pub struct Order {
    /// Unique id, also the first key of the body (subscribers find it without a JSON parse).
    pub id: u64,
    /// tidings topic, `/stocks/{exchange}/{symbol}`.
    pub topic: String,
    /// Index of the topic in `0..TOPICS` (publishing lanes are assigned by it).
    pub topic_index: usize,
    /// The JSON body (≈200 bytes), the very bytes every system carries.
    pub body: String,
    /// Whether the body passes `price < 10 and order = "buy"`.
    pub useful: bool,
    /// The body's `price` in cents (1..=10,000), as generated: what an oracle compares with,
    /// independent of any JSON parser or matcher.
    pub price_cents: u32,
}

impl Order {
    /// The NATS subject of the topic: `stocks.{exchange}.{symbol}`.
    pub fn subject(&self) -> String {
        nats_subject(&self.topic)
    }

    /// The MQTT topic: `stocks/{exchange}/{symbol}`.
    pub fn mqtt_topic(&self) -> &str {
        self.topic.trim_start_matches('/')
    }
}

/// `/a/b/c` → `a.b.c`.
pub fn nats_subject(topic: &str) -> String {
    topic.trim_start_matches('/').replace('/', ".")
}

/// `count` orders with ids `first..first+count` from `seed`. Prices are uniform in
/// 0.01..100.00 and orders buy or sell with equal odds, so `price < 10 and order = "buy"` holds
/// for about 5% of them.
pub fn orders(seed: u64, first: u64, count: usize) -> Vec<Order> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count as u64)
        .map(|k| {
            let id = first + k;
            let ei = rng.random_range(0..EXCHANGES.len());
            let si = rng.random_range(0..SYMBOLS);
            let (ex, name, currency) = EXCHANGES[ei];
            let buy = rng.random_bool(0.5);
            let cents: u32 = rng.random_range(1..=10_000);
            let number: u32 = rng.random_range(1..1000);
            let account: u32 = rng.random_range(0..100_000_000);
            let ts_ns = 1_763_700_000_000_000_000u64 + id * 1_000_000 + rng.random_range(0..1_000_000u64);
            // Written by hand so `id` comes first and the layout is fixed.
            let body = format!(
                r#"{{"id":{id},"exchange":"{name}","symbol":"S{si:02}","order":"{}","number":{number},"price":{}.{:02},"type":"limit","tif":"GTC","currency":"{currency}","account":"ACC-{account:08}","ts_ns":{ts_ns}}}"#,
                if buy { "buy" } else { "sell" },
                cents / 100,
                cents % 100,
            );
            Order {
                id,
                topic: format!("/stocks/{ex}/S{si:02}"),
                topic_index: ei * SYMBOLS + si,
                body,
                useful: buy && cents < 1000,
                price_cents: cents,
            }
        })
        .collect()
}

/// A readiness probe: passes the content filter too, so filtered subscribers see it.
pub fn probe(k: u64) -> Order {
    Order {
        id: PROBE_BASE + k,
        topic: "/stocks/probe/READY".into(),
        topic_index: 0,
        body: format!(
            r#"{{"id":{},"probe":true,"order":"buy","price":0}}"#,
            PROBE_BASE + k
        ),
        useful: true,
        price_cents: 0,
    }
}

/// The first `"id":<digits>` in `bytes` (an order body, or a tidings event JSON whose body is
/// one), without parsing the JSON: the subscriber loops of the fastest systems must not be
/// bound by a full parse.
pub fn body_id(bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":";
    let at = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = bytes[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit());
    let mut v: u64 = 0;
    let mut any = false;
    for d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

#[derive(Deserialize)]
struct FilterFields<'a> {
    price: Option<f64>,
    #[serde(borrow)]
    order: Option<&'a str>,
}

/// What a NATS or MQTT subscriber must do itself to get `price < 10 and order = "buy"`: parse
/// the body and test it. Bodies that are not JSON objects fail the filter.
pub fn useful(body: &[u8]) -> bool {
    match serde_json::from_slice::<FilterFields>(body) {
        Ok(f) => f.order == Some("buy") && f.price.is_some_and(|p| p < 10.0),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_seeded_sized_and_about_five_percent_useful() {
        let a = orders(7, 0, 20_000);
        let b = orders(7, 0, 20_000);
        assert_eq!(a[123].body, b[123].body);
        let mean = a.iter().map(|o| o.body.len()).sum::<usize>() as f64 / a.len() as f64;
        assert!((180.0..230.0).contains(&mean), "mean body {mean}");
        let share = a.iter().filter(|o| o.useful).count() as f64 / a.len() as f64;
        assert!((0.04..0.06).contains(&share), "useful share {share}");
        for o in a.iter().take(2000) {
            assert_eq!(useful(o.body.as_bytes()), o.useful, "{}", o.body);
            let price = serde_json::from_str::<serde_json::Value>(&o.body).unwrap()["price"]
                .as_f64()
                .unwrap();
            assert_eq!((price * 100.0).round() as u32, o.price_cents, "{}", o.body);
            assert_eq!(body_id(o.body.as_bytes()), Some(o.id));
            assert!(serde_json::from_str::<serde_json::Value>(&o.body).is_ok());
        }
        assert!(a.iter().all(|o| o.topic_index < TOPICS));
    }

    #[test]
    fn body_id_finds_the_id_inside_an_event_and_not_the_cid() {
        let ev = br#"{"cid":"bafy","body":{"account":"x","id":42,"price":1}}"#;
        assert_eq!(body_id(ev), Some(42));
        assert_eq!(body_id(br#"{"cid":"x"}"#), None);
        assert_eq!(body_id(br#"{"id":99999999999999999999999}"#), None);
        assert!(useful(probe(1).body.as_bytes()));
        assert_eq!(nats_subject("/stocks/nyse/S01"), "stocks.nyse.S01");
    }
}
