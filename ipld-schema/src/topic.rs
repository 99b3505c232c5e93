//! Topic names (docs/filters.md): `/`-separated, non-empty segments.

use crate::Error;

/// The longest topic accepted, in bytes (UTF-8).
pub const MAX_TOPIC_BYTES: usize = 256;
/// The most segments a topic may have.
pub const MAX_SEGMENTS: usize = 16;

/// Checks that `topic` is a well-formed published topic.
///
/// Rules: starts with `/`; 1 to 16 non-empty `/`-separated segments; no trailing slash; at most
/// 256 bytes; a segment is any Unicode except `/`, `*` and control characters. Published topics
/// never contain wildcards.
pub fn validate(topic: &str) -> Result<(), Error> {
    let bad = |why: String| Err(Error::BadTopic(format!("{topic:?}: {why}")));
    if topic.is_empty() {
        return Err(Error::BadTopic("empty topic".into()));
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return bad(format!(
            "{} bytes, the limit is {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    let Some(rest) = topic.strip_prefix('/') else {
        return bad("must start with '/'".into());
    };
    let mut count = 0usize;
    for (i, segment) in rest.split('/').enumerate() {
        count += 1;
        if segment.is_empty() {
            return if i > 0 && topic.ends_with('/') {
                bad("trailing '/' is not allowed".into())
            } else {
                bad(format!("segment {} is empty", i + 1))
            };
        }
        if let Some(c) = segment.chars().find(|c| *c == '*' || c.is_control()) {
            return bad(format!(
                "segment {} contains {c:?}, which is not allowed in a published topic",
                i + 1
            ));
        }
    }
    if count > MAX_SEGMENTS {
        return bad(format!("{count} segments, the limit is {MAX_SEGMENTS}"));
    }
    Ok(())
}

/// The first segment of a topic (`"stocks"` for `/stocks/euronext/CTT`): it selects the
/// rendezvous (docs/protocols.md). For a string that is not a topic, the text up to the first `/` after
/// an optional leading `/`.
pub fn root_segment(topic: &str) -> &str {
    let rest = topic.strip_prefix('/').unwrap_or(topic);
    match rest.find('/') {
        Some(i) => &rest[..i],
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_topics() {
        for t in [
            "/a",
            "/stocks/euronext/CTT",
            "/fruits/citrus/orange",
            "/ünïcødé/日本/🍊",
            "/a b/c-d.e_f",
            "/x/y/z/a/b/c/d/e/f/g/h/i/j/k/l/m",
        ] {
            validate(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        validate(&format!("/{}", "a".repeat(255))).expect("256 bytes is allowed");
    }

    #[test]
    fn rejects_bad_topics_with_clear_errors() {
        let cases = [
            ("", "empty topic"),
            ("/", "segment 1 is empty"),
            ("a/b", "must start with '/'"),
            ("/a/", "trailing '/'"),
            ("/a//b", "segment 2 is empty"),
            ("/a/*", "'*'"),
            ("/a/**", "'*'"),
            ("/a/b*c", "'*'"),
            ("/a\n", "'\\n'"),
            ("/a\u{7f}", "'\\u{7f}'"),
            ("/a\u{85}b", "'\\u{85}'"),
            ("/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q", "17 segments"),
        ];
        for (t, want) in cases {
            match validate(t) {
                Err(Error::BadTopic(msg)) => {
                    assert!(msg.contains(want), "{t:?}: message {msg:?} lacks {want:?}")
                }
                other => panic!("{t:?}: expected BadTopic, got {other:?}"),
            }
        }
        let long = format!("/{}", "a".repeat(256));
        assert!(matches!(validate(&long), Err(Error::BadTopic(m)) if m.contains("257 bytes")));
    }

    #[test]
    fn root_segment_is_first_segment() {
        assert_eq!(root_segment("/stocks/euronext/CTT"), "stocks");
        assert_eq!(root_segment("/stocks"), "stocks");
        assert_eq!(root_segment("stocks/x"), "stocks");
        assert_eq!(root_segment(""), "");
    }
}
