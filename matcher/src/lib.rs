//! tidings filter language and matchers (docs/filters.md).
//!
//! * [`Filter::parse`] reads the text form, the seeds' JSON form and Mongo-style operators into
//!   one AST ([`ast::Expr`]) and its DNF ([`dnf::Clause`]).
//! * [`ParallelSearchTree`] is the Gryphon-style matcher; [`LinearMatcher`] and
//!   [`CountingMatcher`] are baselines (differential tests, benchmarks).
//!
//! No I/O, no async, no panics on any input.

pub mod ast;
mod attrs;
mod counting;
pub mod dnf;
pub mod error;
mod escape;
mod filter;
mod hash;
mod index;
mod linear;
mod parse_json;
mod parse_text;
mod pst;
pub mod topic;
pub mod value;

pub use counting::CountingMatcher;
pub use error::ParseError;
pub use filter::Filter;
pub use linear::LinearMatcher;
pub use pst::ParallelSearchTree;
pub use topic::{TopicPattern, validate_topic};

/// Subscription id, chosen by the caller.
pub type SubId = u64;

/// Most bytes in a filter's source text.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Most atomic predicates in one filter.
pub const MAX_PREDICATES: usize = 256;
/// Most nesting levels (parentheses, `not`, JSON objects) in a filter.
pub const MAX_DEPTH: usize = 64;

/// A set of subscriptions matched against events.
///
/// All implementations return exactly the same ids for the same subscriptions and event (the
/// differential tests check it).
pub trait Matcher {
    /// Adds (or replaces) subscription `id`.
    fn insert(&mut self, id: SubId, filter: &Filter);
    /// Removes subscription `id`; false if it was not present.
    fn remove(&mut self, id: SubId) -> bool;
    /// Clears `out` and fills it with the ids of the subscriptions matching the event, each
    /// once, in ascending order. A malformed topic matches nothing.
    fn match_event(&self, topic: &str, body: &serde_json::Value, out: &mut Vec<SubId>);
    /// Number of subscriptions.
    fn len(&self) -> usize;
    /// Whether there are no subscriptions.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
