//! Topic patterns (docs/filters.md): `/a/b/c` exact, `*` exactly one segment, `**` (last only) zero
//! or more segments. The first segment is always literal (it selects the rendezvous). 1 to 16
//! non-empty segments, at most 256 bytes, no trailing slash; a segment is any Unicode except
//! `/`, `*` and control characters.

use crate::error::ParseError;

/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 16;
/// Most bytes in a topic or pattern.
pub const MAX_TOPIC_BYTES: usize = 256;

/// One segment of a topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this segment.
    Literal(Box<str>),
    /// `*`: any one segment.
    Any,
}

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    /// Segments before any trailing `**`. Never empty; the first is a literal.
    pub(crate) segs: Vec<Segment>,
    /// The pattern ended in `**` (zero or more further segments).
    pub(crate) rest: bool,
}

fn bad_char(c: char) -> bool {
    c == '/' || c == '*' || c.is_control()
}

impl TopicPattern {
    /// Parses a pattern; `base` is added to error positions (the pattern's offset in a filter).
    pub fn parse(s: &str, base: usize) -> Result<TopicPattern, ParseError> {
        if !s.starts_with('/') {
            return Err(ParseError::new(base, "topic pattern starting with '/'"));
        }
        if s.len() > MAX_TOPIC_BYTES {
            return Err(ParseError::new(
                base + MAX_TOPIC_BYTES,
                format!("topic pattern of at most {MAX_TOPIC_BYTES} bytes"),
            ));
        }
        let mut segs = Vec::new();
        let mut rest = false;
        let mut pos = base + 1;
        let body = &s[1..];
        let parts: Vec<&str> = body.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if rest {
                return Err(ParseError::new(
                    pos - 1,
                    "end of topic pattern after '**' ('**' must be last)",
                ));
            }
            if part.is_empty() {
                let what = if i + 1 == parts.len() && i > 0 {
                    "topic segment (no trailing '/')"
                } else {
                    "non-empty topic segment"
                };
                return Err(ParseError::new(pos, what));
            }
            if segs.len() + usize::from(rest) >= MAX_SEGMENTS {
                return Err(ParseError::new(
                    pos,
                    format!("at most {MAX_SEGMENTS} topic segments"),
                ));
            }
            match *part {
                "**" | "*" if i == 0 => {
                    return Err(ParseError::new(
                        pos,
                        "literal first topic segment (it selects the rendezvous)",
                    ));
                }
                "**" => rest = true,
                "*" => segs.push(Segment::Any),
                lit => {
                    if let Some((off, _)) = lit.char_indices().find(|&(_, c)| bad_char(c)) {
                        return Err(ParseError::new(
                            pos + off,
                            "topic segment character (not '*' or a control character; '*' and '**' stand alone)",
                        ));
                    }
                    segs.push(Segment::Literal(lit.into()));
                }
            }
            pos += part.len() + 1;
        }
        Ok(TopicPattern { segs, rest })
    }

    /// The first (literal) segment.
    pub fn root(&self) -> &str {
        match self.segs.first() {
            Some(Segment::Literal(s)) => s,
            _ => "",
        }
    }

    /// The segments before a trailing `**`.
    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// Whether the pattern ends in `**`.
    pub fn has_rest(&self) -> bool {
        self.rest
    }

    /// Matches already split topic segments.
    pub(crate) fn matches_segs(&self, segs: &[&str]) -> bool {
        if self.rest {
            if segs.len() < self.segs.len() {
                return false;
            }
        } else if segs.len() != self.segs.len() {
            return false;
        }
        self.segs.iter().zip(segs).all(|(p, s)| match p {
            Segment::Any => true,
            Segment::Literal(l) => &**l == *s,
        })
    }

    /// Matches a published topic (false if `topic` is not a well-formed topic).
    pub fn matches(&self, topic: &str) -> bool {
        let mut buf = Vec::new();
        split_topic(topic, &mut buf) && self.matches_segs(&buf)
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.segs {
            match s {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Any => f.write_str("/*")?,
            }
        }
        if self.rest {
            f.write_str("/**")?;
        }
        Ok(())
    }
}

/// Splits a published topic into `out` (cleared first). Returns false, leaving `out` empty or
/// partial, if the topic is not well-formed structurally (leading `/`, 1–16 non-empty
/// segments, at most 256 bytes). Events on such topics match nothing, in every matcher.
pub(crate) fn split_topic<'a>(topic: &'a str, out: &mut Vec<&'a str>) -> bool {
    out.clear();
    if topic.len() > MAX_TOPIC_BYTES {
        return false;
    }
    let Some(body) = topic.strip_prefix('/') else {
        return false;
    };
    for seg in body.split('/') {
        if seg.is_empty() || out.len() == MAX_SEGMENTS {
            return false;
        }
        out.push(seg);
    }
    true
}

/// Checks a published topic: 1 to 16 non-empty segments, at most 256 bytes, no wildcards or
/// control characters. Returns the error position and what was expected.
pub fn validate_topic(topic: &str) -> Result<(), ParseError> {
    if !topic.starts_with('/') {
        return Err(ParseError::new(0, "topic starting with '/'"));
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(ParseError::new(
            MAX_TOPIC_BYTES,
            format!("topic of at most {MAX_TOPIC_BYTES} bytes"),
        ));
    }
    let mut pos = 1;
    for (n, seg) in topic[1..].split('/').enumerate() {
        if seg.is_empty() {
            return Err(ParseError::new(pos, "non-empty topic segment"));
        }
        if n == MAX_SEGMENTS {
            return Err(ParseError::new(
                pos,
                format!("at most {MAX_SEGMENTS} topic segments"),
            ));
        }
        if let Some((off, _)) = seg.char_indices().find(|&(_, c)| bad_char(c)) {
            return Err(ParseError::new(
                pos + off,
                "topic segment character (no '*' or control characters in a published topic)",
            ));
        }
        pos += seg.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TopicPattern {
        TopicPattern::parse(s, 0).unwrap()
    }

    #[test]
    fn patterns() {
        assert!(p("/fruits/**").matches("/fruits"));
        assert!(p("/fruits/**").matches("/fruits/citrus/orange"));
        assert!(!p("/fruits/**").matches("/fruitsx"));
        assert!(p("/a/*/c").matches("/a/b/c"));
        assert!(!p("/a/*/c").matches("/a/c"));
        assert!(!p("/a/*").matches("/a"));
        assert!(p("/a/*/**").matches("/a/b"));
        assert!(!p("/a/*/**").matches("/a"));
        assert!(p("/a").matches("/a"));
        assert!(!p("/a").matches("/a/b"));
        assert!(!p("/a").matches("a"));
        assert!(!p("/a").matches("/a/"));
        assert_eq!(p("/stocks/*/x/**").to_string(), "/stocks/*/x/**");
    }

    #[test]
    fn bad_patterns() {
        for (s, pos) in [
            ("", 0),
            ("a/b", 0),
            ("/", 1),
            ("/a/", 3),
            ("/a//b", 3),
            ("/*/a", 1),
            ("/**", 1),
            ("/a/**/b", 5),
            ("/a/b*", 4),
            ("/a/\u{1}", 3),
        ] {
            let e = TopicPattern::parse(s, 0).unwrap_err();
            assert_eq!(e.pos, pos, "{s}: {e}");
        }
        let long = format!("/{}", "a".repeat(300));
        assert!(TopicPattern::parse(&long, 0).is_err());
        let many = "/a".repeat(17);
        assert!(TopicPattern::parse(&many, 0).is_err());
        assert!(TopicPattern::parse(&"/a".repeat(16), 0).is_ok());
        assert!(TopicPattern::parse(&format!("{}/**", "/a".repeat(15)), 0).is_ok());
        assert!(TopicPattern::parse(&format!("{}/**", "/a".repeat(16)), 0).is_err());
    }

    #[test]
    fn topics() {
        assert!(validate_topic("/stocks/euronext/CTT").is_ok());
        assert!(validate_topic("/stocks/Euronext Lisboa").is_ok());
        assert!(validate_topic("/a/*").is_err());
        assert!(validate_topic("/a/").is_err());
        assert!(validate_topic(&"/a".repeat(17)).is_err());
    }
}
