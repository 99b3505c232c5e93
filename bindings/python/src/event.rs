//! `tidings.Event` (only ever built from a block that verified), `tidings.Published` and
//! `tidings.verify`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tidings_ipld_schema::{Cid, json as ipld_json};

use crate::convert::{from_ipld, from_json};
use crate::errors;

/// One event, checked in this process against its CID (the block's hash) and its author's
/// ed25519 signature before it was handed to you. `body` is the payload (bytes as `bytes`,
/// links as `{"/": "<cid>"}`); `block` the exact DAG-CBOR bytes that were verified.
#[pyclass(module = "tidings", frozen)]
pub(crate) struct Event {
    cid: Cid,
    event: tidings_ipld_schema::Event,
    author: String,
    block: Vec<u8>,
}

impl Event {
    /// Verifies `block` against `cid` (hash, event shape, signature, topic, seq).
    pub(crate) fn verified(cid: Cid, block: Vec<u8>) -> Result<Event, String> {
        let event = tidings_ipld_schema::verify(&cid, &block)
            .map_err(|e| format!("event {cid} failed verification: {e}"))?;
        let author = event
            .author_peer_id()
            .map_err(|e| format!("event {cid} failed verification: {e}"))?
            .to_base58();
        Ok(Event {
            cid,
            event,
            author,
            block,
        })
    }

    pub(crate) fn cid(&self) -> &Cid {
        &self.cid
    }
}

#[pymethods]
impl Event {
    /// The event's CID (CIDv1, dag-cbor, sha2-256), as text.
    #[getter(cid)]
    fn cid_str(&self) -> String {
        self.cid.to_string()
    }

    /// The topic, e.g. `/stocks/euronext/CTT`.
    #[getter]
    fn topic(&self) -> &str {
        &self.event.topic
    }

    /// The author's libp2p peer id (`12D3KooW...`): the node that signed it.
    #[getter]
    fn author(&self) -> &str {
        &self.author
    }

    /// Position in the author's stream on this topic, from 1.
    #[getter]
    fn seq(&self) -> u64 {
        self.event.seq
    }

    /// The publisher's clock, ms since the Unix epoch (advisory).
    #[getter]
    fn time(&self) -> u64 {
        self.event.time
    }

    /// CIDs of the stream's parents: the author's previous event first, then other heads.
    #[getter]
    fn prev(&self) -> Vec<String> {
        self.event.prev.iter().map(Cid::to_string).collect()
    }

    /// The payload, converted anew on each access.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        from_ipld(py, &self.event.body)
    }

    /// The verified DAG-CBOR block.
    #[getter]
    fn block<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.block)
    }

    /// The event as the node's JSON API shows it: cid, topic, author, seq, time, prev, body.
    fn to_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        from_json(py, &ipld_json::event_to_json(&self.cid, &self.event))
    }

    fn __repr__(&self) -> String {
        format!(
            "Event(cid='{}', topic='{}', author='{}', seq={})",
            self.cid, self.event.topic, self.author, self.event.seq
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Event>().is_ok_and(|o| o.get().cid == self.cid)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        Hash::hash(&self.cid, &mut h);
        h.finish()
    }
}

/// What `Client.publish` returns: the new event's CID, its `seq`, how many rendezvous members
/// hold it durably (`copies`), and the topic's heads after it.
#[pyclass(module = "tidings", frozen, get_all)]
pub(crate) struct Published {
    /// The event's CID.
    pub cid: String,
    /// Its place in this node's stream on the topic.
    pub seq: u64,
    /// Rendezvous members that stored it before the answer.
    pub copies: u64,
    /// The topic's heads afterwards.
    pub heads: Vec<String>,
}

#[pymethods]
impl Published {
    fn __repr__(&self) -> String {
        format!(
            "Published(cid='{}', seq={}, copies={}, heads={:?})",
            self.cid, self.seq, self.copies, self.heads
        )
    }

    /// As a dict (what the node answered).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("cid", &self.cid)?;
        d.set_item("seq", self.seq)?;
        d.set_item("copies", self.copies)?;
        d.set_item("heads", &self.heads)?;
        Ok(d)
    }
}

/// Parses a CID given as text; a `BadRequest` names it.
pub(crate) fn parse_cid(s: &str) -> PyResult<Cid> {
    s.parse::<Cid>()
        .map_err(|e| errors::bad_request(format!("invalid CID {s:?}: {e}")))
}

/// Verifies `block` as the tidings event `cid` names (the block's hash, the event's shape,
/// the author's signature) and returns it; raises `VerificationError` if it is not.
#[pyfunction]
pub(crate) fn verify(py: Python<'_>, cid: &str, block: &[u8]) -> PyResult<Event> {
    let cid = parse_cid(cid)?;
    let block = block.to_vec();
    py.detach(move || Event::verified(cid, block))
        .map_err(errors::verification)
}
