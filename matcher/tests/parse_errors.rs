//! Bad filters are rejected with the byte position and what was expected; none panics.

use tidings_matcher::{Filter, ParseError};

fn err(s: &str) -> ParseError {
    match Filter::parse(s) {
        Ok(f) => panic!("{s:?} parsed as {f}"),
        Err(e) => e,
    }
}

#[test]
fn the_design_example_message() {
    let e = err("/stocks/** where price 10");
    assert_eq!(
        e.to_string(),
        "expected operator (= != < <= > >= in exists prefix) after 'price' at 23"
    );
}

#[test]
fn text_errors_are_positioned() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "topic pattern"),
        ("   ", 3, "topic pattern"),
        ("stocks/**", 0, "topic pattern starting with '/'"),
        ("/", 1, "non-empty topic segment"),
        ("/stocks/", 8, "no trailing '/'"),
        ("/stocks//x", 8, "non-empty topic segment"),
        ("/*/x", 1, "literal first topic segment"),
        ("/**", 1, "literal first topic segment"),
        ("/a/**/b", 5, "'**' must be last"),
        ("/a/b*c", 4, "topic segment character"),
        ("/a where", 8, "condition after 'where'"),
        ("/a when x = 1", 3, "'where' or end of input"),
        ("/a where = 1", 9, "field name"),
        ("/a where price", 14, "operator"),
        ("/a where price 10", 15, "operator"),
        ("/a where price <", 16, "value"),
        ("/a where price < true", 21, "not ordered"),
        ("/a where price < abc", 17, "value"),
        ("/a where price < 1.", 17, "number in JSON syntax"),
        ("/a where price < 05x", 17, "number in JSON syntax"),
        ("/a where price < 10 and", 23, "field name"),
        ("/a where price < 10 or", 22, "field name"),
        (
            "/a where price < 10 xor b = 1",
            20,
            "'and', 'or' or end of input",
        ),
        ("/a where (price < 10", 20, "')' closing the '(' at 9"),
        ("/a where price < 10)", 19, "'and', 'or' or end of input"),
        ("/a where not", 12, "field name"),
        ("/a where a.", 11, "field name"),
        ("/a where a..b = 1", 11, "field name"),
        ("/a where a = \"x", 15, "closing quote"),
        ("/a where a = \"\\q\"", 14, "escape"),
        ("/a where a = \"\\u12\"", 16, "4 hex digits"),
        ("/a where a = \"\\ud800\"", 20, "low surrogate"),
        ("/a where a in 1", 14, "'['"),
        ("/a where a in [1", 16, "',' or ']'"),
        ("/a where a in [1,]", 17, "value"),
        ("/a where a not 1", 15, "'in' after 'not'"),
        ("/a where a prefix 1", 18, "string after 'prefix'"),
        ("/a where and = 1", 9, "not a keyword"),
        ("/a where $..[ < 1", 9, "valid JSONPath"),
        ("/a where a == ", 14, "value"),
        ("/a where a =! 1", 12, "value"),
    ];
    for (s, pos, what) in cases {
        let e = err(s);
        assert_eq!(e.pos, *pos, "{s:?}: {e}");
        assert!(e.to_string().contains(what), "{s:?}: {e} (wanted {what:?})");
        assert!(e.to_string().ends_with(&format!(" at {pos}")), "{s:?}: {e}");
    }
}

#[test]
fn json_errors_are_positioned() {
    let cases: &[(&str, usize, &str)] = &[
        ("{", 1, "'\"' starting an object key"),
        ("{}", 0, "\"topic\" key"),
        (r#"{"topic": 5}"#, 10, "topic pattern string"),
        (
            r#"{"topic": "stocks"}"#,
            11,
            "topic pattern starting with '/'",
        ),
        (r#"{"topic": "/a/"}"#, 14, "no trailing '/'"),
        (r#"{"topic": "/a" "x": 1}"#, 15, "',' or '}'"),
        (r#"{"topic": "/a", "x" 1}"#, 20, "':' after 'x'"),
        (r#"{"topic": "/a", "x": }"#, 21, "JSON value"),
        (r#"{"topic": "/a", "x": tru}"#, 21, "JSON value"),
        (r#"{"topic": "/a", "x": 01}"#, 22, "',' or '}'"),
        (r#"{"topic": "/a", "x": 1} x"#, 24, "end of input"),
        (r#"{"topic": "/a", "x": [1]}"#, 21, "$in"),
        (r#"{"topic": "/a", "x": {}}"#, 21, "non-empty object"),
        (
            r#"{"topic": "/a", "x": "<"}"#,
            23,
            "value after the operator",
        ),
        (r#"{"topic": "/a", "x": "!x"}"#, 22, "'!='"),
        (r#"{"topic": "/a", "x": {"$gt": [1]}}"#, 29, "not an array"),
        (r#"{"topic": "/a", "x": {"$lt": null}}"#, 29, "not ordered"),
        (r#"{"topic": "/a", "x": {"$in": 1}}"#, 29, "array of values"),
        (
            r#"{"topic": "/a", "x": {"$exists": 1}}"#,
            33,
            "true or false",
        ),
        (
            r#"{"topic": "/a", "x": {"$prefix": 1}}"#,
            33,
            "string after '$prefix'",
        ),
        (
            r#"{"topic": "/a", "x": {"$regex": "a"}}"#,
            22,
            "operator ($eq",
        ),
        (
            r#"{"topic": "/a", "x": {"$gt": 1, "y": 2}}"#,
            32,
            "operator",
        ),
        (
            r#"{"topic": "/a", "x": {"y": 1, "$gt": 2}}"#,
            30,
            "do not mix",
        ),
        (r#"{"topic": "/a", "$nor": []}"#, 16, "$and $or $not"),
        (
            r#"{"topic": "/a", "$or": {}}"#,
            23,
            "array of condition objects",
        ),
        (r#"{"topic": "/a", "$or": []}"#, 23, "non-empty array"),
        (
            r#"{"topic": "/a", "$or": [{"topic": "/b"}]}"#,
            25,
            "top level",
        ),
        (r#"{"topic": "/a", "$and": [1]}"#, 25, "condition object"),
        (r#"{"topic": "/a", "x": 1, "x": 2}"#, 24, "no duplicate key"),
        (r#"{"topic": "/a", "a..b": 1}"#, 17, "no empty segment"),
        (r#"{"topic": "/a", "$.[": 1}"#, 17, "valid JSONPath"),
        (r#"{"topic": "/a", "x": "\q"}"#, 22, "JSON escape"),
        ("[1]", 0, "JSON filter object"),
        (
            r#"{"topic": "/a", "x": {"$not": {"y": 1}}}"#,
            30,
            "non-empty operator object",
        ),
        (
            r#"{"topic": "/a", "x": {"$not": 5}}"#,
            30,
            "operator object",
        ),
    ];
    let mut bad = Vec::new();
    for (s, pos, what) in cases {
        let e = err(s);
        if e.pos != *pos || !e.to_string().contains(what) {
            bad.push(format!("{s:?}: {e} (wanted {what:?} at {pos})"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn limits() {
    // Nesting, size and DNF-expansion limits are errors, not stack overflows or blow-ups.
    let deep = format!("/a where {}x = 1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(err(&deep).to_string().contains("nesting"));
    let nots = format!("/a where {}x = 1", "not ".repeat(10_000));
    assert!(err(&nots).to_string().contains("nesting"));
    let json = format!(
        "{{\"topic\": \"/a\", \"x\": {}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(Filter::parse(&json).is_err());
    let huge = format!("/a where x = \"{}\"", "y".repeat(70_000));
    assert!(err(&huge).to_string().contains("at most"));
    let product = (0..8)
        .map(|i| format!("(a = {i} or b = {i})"))
        .collect::<Vec<_>>()
        .join(" and ");
    assert!(
        err(&format!("/a where {product}"))
            .to_string()
            .contains("alternatives")
    );
    let many = (0..300)
        .map(|i| format!("a != {i}"))
        .collect::<Vec<_>>()
        .join(" and ");
    assert!(
        err(&format!("/a where {many}"))
            .to_string()
            .contains("predicates")
    );
}

#[test]
fn garbage_never_panics() {
    let bytes: Vec<u8> = (0..=255u8).collect();
    let mut seed = 0x1234_5678u32;
    for _ in 0..20_000 {
        let mut s = String::new();
        let len = (seed % 40) as usize;
        for _ in 0..len {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let pick = [
                "/",
                "a",
                "*",
                "**",
                " where ",
                " and ",
                " or ",
                "not ",
                "(",
                ")",
                "=",
                "<",
                ">=",
                "!=",
                "\"",
                "'",
                "\\",
                "{",
                "}",
                "[",
                "]",
                ":",
                ",",
                "$",
                ".",
                "1",
                "-",
                "e",
                "in",
                "exists",
                "prefix",
                "\"$gt\"",
                "\"topic\"",
                "é",
                "\u{0}",
            ];
            s.push_str(pick[(seed >> 16) as usize % pick.len()]);
        }
        let _ = Filter::parse(&s);
        let _ = Filter::parse(&format!("/a where {s}"));
        let _ = Filter::parse(&format!("{{\"topic\": \"/a\", {s}"));
        let _ = bytes.len();
    }
}
