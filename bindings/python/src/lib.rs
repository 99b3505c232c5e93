//! The native module of the `tidings` Python package (`tidings._tidings`): an embedded node,
//! a client whose every returned event was verified in Rust (CID and signature), the node's
//! filter matcher, and the exceptions. The protocol lives in the workspace crates
//! (`tidings-node`, `tidings-ipld-schema`, `tidings-matcher`); this crate only adapts them.

mod client;
mod convert;
mod errors;
mod event;
mod filter;
mod node;
mod runtime;
mod subscription;

use pyo3::prelude::*;

#[pymodule]
fn _tidings(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<node::Node>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<subscription::Subscription>()?;
    m.add_class::<event::Event>()?;
    m.add_class::<event::Published>()?;
    m.add_class::<filter::Filter>()?;
    m.add_function(wrap_pyfunction!(event::verify, m)?)?;
    m.add("DEFAULT_API", tidings_node::client::DEFAULT_API)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
