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
