//! JSON <-> IPLD data model (DAG-JSON conventions for links and bytes) and the event JSON of
//! docs/api.md.

use crate::{Cid, Error, Event, Ipld, MAX_BODY_DEPTH};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

/// Standard alphabet, padding optional on input (DAG-JSON writes none).
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// JSON -> IPLD data model with DAG-JSON conventions: `{"/": "<cid>"}` is a link, `{"/": {"bytes": "<base64, no padding>"}}` is bytes;
/// an integer JSON number stays Integer, anything else Float.
///
/// `-0.0` becomes `0.0`: DAG-CBOR (as serde_ipld_dagcbor implements it) has a single zero.
/// A map whose only key is `"/"` but which is neither form is refused (DAG-JSON reserves it);
/// nesting deeper than [`MAX_BODY_DEPTH`] is refused.
pub fn json_to_ipld(v: &Value) -> Result<Ipld, Error> {
    convert(v.clone(), 0)
}

/// [`json_to_ipld`] taking the value, whose strings and keys it moves instead of copying (the
/// publish path owns the body it converts).
pub fn json_into_ipld(v: Value) -> Result<Ipld, Error> {
    convert(v, 0)
}

fn convert(v: Value, depth: usize) -> Result<Ipld, Error> {
    Ok(match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(b),
        Value::Number(n) => number(&n)?,
        Value::String(s) => Ipld::String(s),
        Value::Array(items) => {
            let depth = enter(depth)?;
            Ipld::List(
                items
                    .into_iter()
                    .map(|i| convert(i, depth))
                    .collect::<Result<_, _>>()?,
            )
        }
        Value::Object(m) => {
            if m.len() == 1
                && let Some(inner) = m.get("/")
            {
                return special(inner);
            }
            let depth = enter(depth)?;
            Ipld::Map(
                m.into_iter()
                    .map(|(k, v)| Ok((k, convert(v, depth)?)))
                    .collect::<Result<BTreeMap<_, _>, Error>>()?,
            )
        }
    })
}

fn enter(depth: usize) -> Result<usize, Error> {
    if depth >= MAX_BODY_DEPTH {
        Err(Error::Json(format!(
            "nested more than {MAX_BODY_DEPTH} levels deep"
        )))
    } else {
        Ok(depth + 1)
    }
}

fn number(n: &Number) -> Result<Ipld, Error> {
    if let Some(u) = n.as_u64() {
        Ok(Ipld::Integer(u.into()))
    } else if let Some(i) = n.as_i64() {
        Ok(Ipld::Integer(i.into()))
    } else {
        match n.as_f64() {
            // `f + 0.0` turns -0.0 into 0.0 and leaves every other value alone.
            Some(f) if f.is_finite() => Ok(Ipld::Float(f + 0.0)),
            _ => Err(Error::Json(format!("number {n} is not representable"))),
        }
    }
}

fn special(inner: &Value) -> Result<Ipld, Error> {
    match inner {
        Value::String(s) => Cid::try_from(s.as_str())
            .map(Ipld::Link)
            .map_err(|e| Error::Json(format!("{{\"/\": {s:?}}} is not a valid link: {e}"))),
        Value::Object(o) if o.len() == 1 => match o.get("bytes") {
            Some(Value::String(b)) => LENIENT_B64.decode(b).map(Ipld::Bytes).map_err(|e| {
                Error::Json(format!("{{\"/\": {{\"bytes\": ...}}}}: bad base64: {e}"))
            }),
            _ => Err(reserved()),
        },
        _ => Err(reserved()),
    }
}

fn reserved() -> Error {
    Error::Json(
        "a map whose only key is \"/\" must be a link {\"/\": \"<cid>\"} or bytes {\"/\": {\"bytes\": \"<base64>\"}}".into(),
    )
}

/// IPLD -> JSON, the inverse of [`json_to_ipld`]: links become `{"/": "<cid>"}`, bytes
/// `{"/": {"bytes": "<base64, no padding>"}}`, floats stay floats (`2.0`).
///
/// Integers outside the i64/u64 range (possible only below -2^63) become the nearest float.
pub fn ipld_to_json(v: &Ipld) -> Value {
    match v {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => {
            if let Ok(x) = i64::try_from(*i) {
                Value::from(x)
            } else if let Ok(x) = u64::try_from(*i) {
                Value::from(x)
            } else {
                Number::from_f64(*i as f64).map_or(Value::Null, Value::Number)
            }
        }
        Ipld::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => {
            let mut inner = Map::new();
            inner.insert("bytes".into(), Value::String(STANDARD_NO_PAD.encode(b)));
            let mut outer = Map::new();
            outer.insert("/".into(), Value::Object(inner));
            Value::Object(outer)
        }
        Ipld::List(items) => Value::Array(items.iter().map(ipld_to_json).collect()),
        Ipld::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                .collect(),
        ),
        Ipld::Link(c) => link(c),
    }
}

fn link(c: &Cid) -> Value {
    let mut m = Map::new();
    m.insert("/".into(), Value::String(c.to_string()));
    Value::Object(m)
}

/// The event JSON of docs/api.md: {"cid","topic","author" (PeerId base58),"seq","time","prev" [cid strings],"body"}.
///
/// `author` is the author key's peer id as [`Event::author_text`] shows it (`null` for a key too
/// long to be one, never for a verified event).
pub fn event_to_json(cid: &Cid, e: &Event) -> Value {
    let mut m = Map::new();
    m.insert("cid".into(), Value::String(cid.to_string()));
    m.insert("topic".into(), Value::String(e.topic.clone()));
    m.insert(
        "author".into(),
        e.author_text().map_or(Value::Null, Value::String),
    );
    m.insert("seq".into(), Value::from(e.seq));
    m.insert("time".into(), Value::from(e.time));
    m.insert(
        "prev".into(),
        Value::Array(
            e.prev
                .iter()
                .map(|c| Value::String(c.to_string()))
                .collect(),
        ),
    );
    m.insert("body".into(), ipld_to_json(&e.body));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::keypair;
    use crate::{DAG_CBOR, cid_of};
    use serde_json::json;

    #[test]
    fn numbers_keep_their_kind() {
        let v = json_to_ipld(&json!([
            1,
            -1,
            1.0,
            1.5,
            1e3,
            18446744073709551615u64,
            -9223372036854775808i64
        ]))
        .expect("ok");
        assert_eq!(
            v,
            Ipld::List(vec![
                Ipld::Integer(1),
                Ipld::Integer(-1),
                Ipld::Float(1.0),
                Ipld::Float(1.5),
                Ipld::Float(1000.0),
                Ipld::Integer(u64::MAX.into()),
                Ipld::Integer(i64::MIN.into()),
            ])
        );
        let parsed: Value = serde_json::from_str("[2, 2.0, 2e0]").expect("json");
        assert_eq!(
            json_to_ipld(&parsed).expect("ok"),
            Ipld::List(vec![Ipld::Integer(2), Ipld::Float(2.0), Ipld::Float(2.0)])
        );
        assert_eq!(
            serde_json::to_string(&ipld_to_json(&Ipld::Float(2.0))).expect("s"),
            "2.0"
        );
    }

    #[test]
    fn negative_zero_is_zero() {
        let v = json_to_ipld(&json!(-0.0)).expect("ok");
        let Ipld::Float(f) = v else { panic!("float") };
        assert!(f == 0.0 && f.is_sign_positive());
    }

    #[test]
    fn links_and_bytes() {
        let c = cid_of(DAG_CBOR, b"x");
        let j = json!({"l": {"/": c.to_string()}, "b": {"/": {"bytes": "aGVsbG8"}}, "p": {"/": {"bytes": "aGVsbG8="}}});
        let v = json_to_ipld(&j).expect("ok");
        let Ipld::Map(m) = &v else { panic!("map") };
        assert_eq!(m["l"], Ipld::Link(c));
        assert_eq!(m["b"], Ipld::Bytes(b"hello".to_vec()));
        assert_eq!(m["p"], Ipld::Bytes(b"hello".to_vec()));
        let back = ipld_to_json(&v);
        assert_eq!(back["b"], json!({"/": {"bytes": "aGVsbG8"}}));
        assert_eq!(back["l"], json!({"/": c.to_string()}));
        // "/" beside other keys is an ordinary map.
        let v = json_to_ipld(&json!({"/": "x", "y": 1})).expect("ordinary");
        assert!(matches!(v, Ipld::Map(m) if m.len() == 2));
    }

    #[test]
    fn bad_json_forms_are_refused() {
        for (j, want) in [
            (json!({"/": "not-a-cid"}), "not a valid link"),
            (json!({"/": {"bytes": "@@@"}}), "bad base64"),
            (json!({"/": 5}), "only key"),
            (json!({"/": {"bytes": "aa", "x": 1}}), "only key"),
        ] {
            match json_to_ipld(&j) {
                Err(Error::Json(m)) => assert!(m.contains(want), "{j}: {m}"),
                other => panic!("{j}: {other:?}"),
            }
        }
        let mut deep = json!(1);
        for _ in 0..=MAX_BODY_DEPTH {
            deep = json!([deep]);
        }
        assert!(matches!(json_to_ipld(&deep), Err(Error::Json(m)) if m.contains("nested")));
    }

    #[test]
    fn event_json_has_the_design_keys() {
        let k = keypair(3);
        let p = cid_of(DAG_CBOR, b"p");
        let body = json_to_ipld(&json!({"price": 5.55, "order": "buy"})).expect("body");
        let (e, b) = Event::sign_block(
            &k,
            "/stocks/euronext/CTT",
            body,
            17,
            1_763_700_000_000,
            vec![p],
        )
        .expect("sign");
        let j = event_to_json(&b.cid, &e);
        assert_eq!(
            j,
            json!({
                "cid": b.cid.to_string(), "topic": "/stocks/euronext/CTT",
                "author": k.public().to_peer_id().to_base58(), "seq": 17, "time": 1_763_700_000_000u64,
                "prev": [p.to_string()], "body": {"price": 5.55, "order": "buy"},
            })
        );
        assert!(j["author"].as_str().expect("str").starts_with("12D3KooW"));
        assert!(j["cid"].as_str().expect("str").starts_with("bafyrei"));
    }
}
