//! [`Filter`]: a parsed subscription (topic pattern + condition), and its direct evaluation.

use std::fmt;

use serde_json::Value;

use crate::ast::Expr;
use crate::dnf::{Clause, MAX_CLAUSES, to_dnf};
use crate::error::ParseError;
use crate::topic::{TopicPattern, split_topic};
use crate::{MAX_FILTER_BYTES, MAX_PREDICATES, parse_json, parse_text};

/// A subscription filter: a topic pattern plus a condition on the event body.
///
/// Parse any of the three syntaxes with [`Filter::parse`]; they compile to the same AST
/// ([`Filter::condition`]) and the same DNF ([`Filter::clauses`]).
#[derive(Debug, Clone)]
pub struct Filter {
    topic: TopicPattern,
    expr: Expr,
    clauses: Vec<Clause>,
}

impl Filter {
    /// Parses a filter: the JSON form (seeds' or Mongo-style) when the trimmed input starts
    /// with `{`, otherwise the text form (`/stocks/** where price < 10 and order = "buy"`).
    ///
    /// Never panics; errors name the byte position and what was expected there.
    pub fn parse(s: &str) -> Result<Filter, ParseError> {
        if s.len() > MAX_FILTER_BYTES {
            return Err(ParseError::new(
                MAX_FILTER_BYTES,
                format!("a filter of at most {MAX_FILTER_BYTES} bytes"),
            ));
        }
        let (topic, expr) = if s.trim_start().starts_with('{') {
            parse_json::parse(s)?
        } else {
            parse_text::parse(s)?
        };
        Filter::new(topic, expr)
    }

    /// Builds a filter from parts (checks the size limits and computes the DNF).
    pub fn new(topic: TopicPattern, expr: Expr) -> Result<Filter, ParseError> {
        let n = expr.size();
        if n > MAX_PREDICATES {
            return Err(ParseError::new(
                0,
                format!("at most {MAX_PREDICATES} predicates in a filter (found {n})"),
            ));
        }
        let clauses = to_dnf(&expr).map_err(|_| {
            ParseError::new(
                0,
                format!("a condition expanding to at most {MAX_CLAUSES} alternatives ('or' is distributed over 'and')"),
            )
        })?;
        Ok(Filter {
            topic,
            expr,
            clauses,
        })
    }

    /// Whether an event on `topic` with `body` matches (direct evaluation of the AST).
    /// A malformed `topic` matches nothing.
    pub fn matches(&self, topic: &str, body: &Value) -> bool {
        let mut segs = Vec::with_capacity(8);
        split_topic(topic, &mut segs) && self.topic.matches_segs(&segs) && self.expr.eval(body)
    }

    /// The first (literal) topic segment: it selects the rendezvous.
    pub fn root(&self) -> &str {
        self.topic.root()
    }

    /// The topic pattern.
    pub fn topic(&self) -> &TopicPattern {
        &self.topic
    }

    /// The condition on the body (`Expr::True` for a topic-only filter).
    pub fn condition(&self) -> &Expr {
        &self.expr
    }

    /// The condition in disjunctive normal form (empty: can never match).
    pub fn clauses(&self) -> &[Clause] {
        &self.clauses
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topic = self.topic.to_string();
        // An unquoted topic ends at whitespace in the text form; a segment may hold some.
        if topic.contains(char::is_whitespace) {
            f.write_str(&crate::escape::quote(&topic))?;
        } else {
            f.write_str(&topic)?;
        }
        if self.expr != Expr::True {
            write!(f, " where {}", self.expr)?;
        }
        Ok(())
    }
}
