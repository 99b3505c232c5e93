//! Errors.

use thiserror::Error;

/// A filter (or topic) that could not be parsed: the byte position in the input and what was
/// expected there, e.g. `expected operator after 'price' at 17`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("expected {expected}{} at {pos}", after.as_ref().map(|a| format!(" after '{a}'")).unwrap_or_default())]
pub struct ParseError {
    /// Byte offset in the input where the problem was found.
    pub pos: usize,
    /// What would have been accepted there.
    pub expected: String,
    /// The token just before `pos`, when that helps the reader.
    pub after: Option<String>,
}

impl ParseError {
    /// An error at `pos` expecting `expected`.
    pub fn new(pos: usize, expected: impl Into<String>) -> ParseError {
        ParseError {
            pos,
            expected: expected.into(),
            after: None,
        }
    }

    /// Names the token before the error position (truncated to 40 characters).
    pub fn after(mut self, token: &str) -> ParseError {
        let t: String = token.chars().take(40).collect();
        self.after = Some(t);
        self
    }
}

/// Characters of the filter shown on each side of the error position.
const WINDOW: usize = 60;

impl ParseError {
    /// The message followed by the filter (the part around the error, on one line) and a
    /// caret under the error position:
    ///
    /// ```text
    /// expected operator (= != < <= > >= in exists prefix) after 'price' at 23
    ///   /stocks/** where price 10
    ///                          ^
    /// ```
    pub fn pointed(&self, src: &str) -> String {
        let mut pos = self.pos.min(src.len());
        while !src.is_char_boundary(pos) {
            pos -= 1;
        }
        let before: Vec<char> = src[..pos].chars().collect();
        let after: Vec<char> = src[pos..].chars().collect();
        let skip = before.len().saturating_sub(WINDOW);
        let take = WINDOW.min(after.len());
        // One line: control characters (newlines in a JSON filter) shown as spaces.
        let flat = |c: &char| if c.is_control() { ' ' } else { *c };
        let mut line = String::new();
        if skip > 0 {
            line.push('…');
        }
        line.extend(before[skip..].iter().map(flat));
        let col = line.chars().count();
        line.extend(after[..take].iter().map(flat));
        if take < after.len() {
            line.push('…');
        }
        format!("{self}\n  {}\n  {}^", line.trim_end(), " ".repeat(col))
    }
}

#[cfg(test)]
mod tests {
    use crate::Filter;

    #[test]
    fn the_caret_sits_under_the_error_position() {
        let src = "/stocks/** where price 10";
        let e = Filter::parse(src).unwrap_err();
        assert_eq!(
            e.pointed(src),
            format!(
                "expected operator (= != < <= > >= in exists prefix) after 'price' at 23\n  \
                 /stocks/** where price 10\n  {}^",
                " ".repeat(23)
            )
        );
        // A JSON filter over several lines is shown on one; a non-ASCII prefix counts as
        // characters, not bytes.
        let src = "{\"topic\": \"/é\",\n \"a\": {\"$lt\": true}}";
        let e = Filter::parse(src).unwrap_err();
        let shown = e.pointed(src);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        let caret = lines[2].chars().count() - 1;
        assert_eq!(lines[1].chars().nth(caret), Some('t'), "{shown}");
    }

    #[test]
    fn a_long_filter_is_cut_around_the_error() {
        let src = format!("/a where {}x ! 1", "b = 1 and ".repeat(50));
        let e = Filter::parse(&src).unwrap_err();
        let shown = e.pointed(&src);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[1].starts_with("  …"), "{shown}");
        assert!(lines[1].chars().count() < 140, "{shown}");
        let caret = lines[2].chars().count() - 1;
        assert_eq!(lines[1].chars().nth(caret), Some('!'), "{shown}");
    }
}
