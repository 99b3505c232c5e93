//! `tidings.Filter`: the node's own matcher, for testing filters offline.

use pyo3::prelude::*;

use crate::convert::to_json;
use crate::errors;

/// A subscription filter in any of the three syntaxes (text, the seeds' JSON, Mongo-style),
/// parsed by the same code as the node's. A filter that does not parse raises `BadRequest`
/// with `position`, the byte offset of the problem.
#[pyclass(module = "tidings", frozen)]
pub(crate) struct Filter {
    filter: tidings_matcher::Filter,
    text: String,
}

#[pymethods]
impl Filter {
    #[new]
    fn new(text: &str) -> PyResult<Filter> {
        let filter = tidings_matcher::Filter::parse(text).map_err(|e| errors::bad_filter(&e))?;
        Ok(Filter {
            filter,
            text: text.to_owned(),
        })
    }

    /// Whether an event on `topic` with `body` matches, exactly as the node decides it.
    fn matches(&self, topic: &str, body: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.filter.matches(topic, &to_json(body)?))
    }

    /// The root segment of the topic pattern (selects the rendezvous set).
    #[getter]
    fn root(&self) -> &str {
        self.filter.root()
    }

    /// The text it was made from.
    #[getter]
    fn text(&self) -> &str {
        &self.text
    }

    /// The filter in the text syntax, normalised (it parses back to the same filter).
    fn __str__(&self) -> String {
        self.filter.to_string()
    }

    fn __repr__(&self) -> String {
        format!("Filter({:?})", self.text)
    }
}
