//! `tidings.Client`: a node's HTTP API through the CLI's own client (`tidings_node::client`),
//! with every event it returns verified in this process first.

use std::collections::HashSet;
use std::path::PathBuf;

use futures::StreamExt;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;
use tidings_ipld_schema::{Cid, DAG_CBOR, car};
use tidings_node::client::DEFAULT_API;

use crate::convert::{from_json, to_json};
use crate::errors::{self, Failure, Kind};
use crate::event::{Event, Published, parse_cid};
use crate::runtime::wait;
use crate::subscription::{self, Subscription};

/// A client of one node's HTTP API. `api` defaults to `TIDINGS_API`, then
/// `http://127.0.0.1:7700`; `token` to `TIDINGS_TOKEN` (sent as a bearer token). Every `Event`
/// it returns was verified here (CID and signature), so the node need not be trusted for
/// them. Methods block with the GIL released; a client is safe to share between threads.
#[pyclass(module = "tidings", frozen)]
pub(crate) struct Client {
    pub(crate) http: tidings_node::client::Client,
    pub(crate) api: String,
    pub(crate) token: Option<String>,
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Client {
    pub(crate) fn connect(api: Option<String>, token: Option<String>) -> Client {
        let api = api
            .or_else(|| env("TIDINGS_API"))
            .unwrap_or_else(|| DEFAULT_API.to_string());
        let api = api.trim_end_matches('/').to_string();
        let token = token.or_else(|| env("TIDINGS_TOKEN"));
        Client {
            http: tidings_node::client::Client::new(&api, token.clone()),
            api,
            token,
        }
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (api=None, token=None))]
    fn new(api: Option<String>, token: Option<String>) -> Client {
        Client::connect(api, token)
    }

    /// The node's API URL.
    #[getter]
    fn api(&self) -> &str {
        &self.api
    }

    /// Publishes `body` (None, bool, int, float, str, bytes, list, tuple, dict) on `topic`;
    /// returns once the event is durable on a majority of the topic's rendezvous set.
    fn publish(&self, py: Python<'_>, topic: &str, body: &Bound<'_, PyAny>) -> PyResult<Published> {
        let body = to_json(body)?;
        let v = wait(py, self.http.publish(topic, &body))?.map_err(Failure::from)?;
        Ok(Published {
            cid: text(&v, "cid"),
            seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0),
            copies: v.get("copies").and_then(Value::as_u64).unwrap_or(0),
            heads: strings(&v, "heads"),
        })
    }

    /// The event `cid`, read as a block and verified here. Raises `NotFound` if the node does
    /// not hold it, `VerificationError` if what it sent is not that event.
    fn get(&self, py: Python<'_>, cid: &str) -> PyResult<Event> {
        let cid = parse_cid(cid)?;
        let block = wait(py, self.http.block(&cid.to_string()))?.map_err(Failure::from)?;
        py.detach(move || Event::verified(cid, block))
            .map_err(errors::verification)
    }

    /// The current heads of `topic`'s stream (CIDs; one unless writers were concurrent).
    fn heads(&self, py: Python<'_>, topic: &str) -> PyResult<Vec<String>> {
        let v = wait(py, self.http.heads(topic))?.map_err(Failure::from)?;
        Ok(strings(&v, "heads"))
    }

    /// The node's status: peer id, role, listen addresses, peers, store, ...
    pub(crate) fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = wait(py, self.http.status())?.map_err(Failure::from)?;
        from_json(py, &v)
    }

    /// Subscribes with `filter` (text, the seeds' JSON or Mongo-style). Returns once the
    /// network holds the subscription: everything published afterwards that matches arrives.
    /// `durable` names a durable subscription (the network keeps what you have not
    /// acknowledged with `Subscription.ack` while you are away); `since` replays stored events
    /// first: ms since the Unix epoch (0 = from the start), a `datetime`, or a `timedelta` ago.
    /// Iterate it (`for` or `async for`); every event is verified before you see it.
    #[pyo3(signature = (filter, durable=None, since=None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        filter: &str,
        durable: Option<String>,
        since: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Subscription> {
        let since = since.map(subscription::since_ms).transpose()?;
        subscription::open(py, self, filter, durable, since)
    }

    /// Deletes durable subscription `name` and its backlog (`NotFound` if unknown).
    fn delete_durable(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        wait(py, self.http.delete_durable(name))?.map_err(Failure::from)?;
        Ok(())
    }

    /// Has the node fetch and verify the history behind `cid` (through `prev` and body links)
    /// from other nodes, down to the CIDs in `until`. `progress`, if given, is called with a
    /// dict `{"blocks", "bytes", "estimate"}` as the node reports progress (about 4 times a
    /// second) and once more at the end with the final counts. Returns the node's summary;
    /// raises `NotFound` (with the summary as `summary`) if no peer had all of it.
    #[pyo3(signature = (cid, until=Vec::new(), progress=None))]
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        cid: &str,
        until: Vec<String>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        parse_cid(cid)?;
        for u in &until {
            parse_cid(u)?;
        }
        let resp = wait(py, self.http.fetch(cid, &until))?.map_err(Failure::from)?;
        let mut body = Box::pin(resp.bytes_stream());
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = match wait(py, body.next())? {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(Failure::new(
                        Kind::Unavailable,
                        format!("the fetch stream broke: {e}"),
                    )
                    .into());
                }
                None => {
                    return Err(Failure::new(
                        Kind::Unavailable,
                        "the node closed the fetch before it finished",
                    )
                    .into());
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let v: Value = serde_json::from_slice(&line)
                    .map_err(|e| errors::error(format!("bad line from the node's fetch: {e}")))?;
                if let Some(p) = v.get("progress") {
                    if let Some(cb) = &progress {
                        cb.call1((from_json(py, p)?,))?;
                    }
                } else if let Some(done) = v.get("done") {
                    return fetch_done(py, done, progress.as_ref());
                } else if let Some(e) = v.get("error").and_then(Value::as_str) {
                    return Err(
                        Failure::new(Kind::Unavailable, format!("fetch failed: {e}")).into(),
                    );
                }
            }
        }
    }

    /// Writes `topic`'s stream as a CAR v1 file at `path` (roots: the heads), after checking
    /// every block here: each block against its CID, each event's signature and topic. Nothing
    /// is written if any check fails (`VerificationError`). Returns `{"blocks", "events",
    /// "bytes", "roots", "complete"}`; `complete` says every `prev` link and root is inside.
    fn export_car<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        path: PathBuf,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bytes = wait(py, self.http.export(topic))?.map_err(Failure::from)?;
        let topic = topic.to_string();
        let (summary, bytes) = py
            .detach(move || verify_car(&topic, &bytes).map(|s| (s, bytes)))
            .map_err(errors::verification)?;
        std::fs::write(&path, &bytes)
            .map_err(|e| errors::error(format!("cannot write {}: {e}", path.display())))?;
        from_json(py, &summary)
    }

    /// Imports the CAR v1 file at `path` into the node: all or nothing, every block and
    /// signature verified by the node. Returns its summary `{"blocks", "events", "new_blocks"}`.
    fn import_car<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
        let bytes = std::fs::read(&path)
            .map_err(|e| errors::bad_request(format!("cannot read {}: {e}", path.display())))?;
        let v = wait(py, self.http.import(bytes))?.map_err(Failure::from)?;
        from_json(py, &v)
    }

    fn __repr__(&self) -> String {
        format!("Client(api='{}')", self.api)
    }
}

/// The end of a fetch: a last progress call with the final counts, then the summary, or
/// `NotFound` when blocks are missing.
fn fetch_done<'py>(
    py: Python<'py>,
    done: &Value,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let n = |k: &str| done.get(k).and_then(Value::as_u64).unwrap_or(0);
    if let Some(cb) = progress {
        let p = PyDict::new(py);
        p.set_item("blocks", n("blocks"))?;
        p.set_item("bytes", n("bytes"))?;
        p.set_item("estimate", n("blocks"))?;
        cb.call1((p,))?;
    }
    let summary = from_json(py, done)?;
    let missing = strings(done, "missing");
    if let Some(first) = missing.first() {
        let err = Failure::new(
            Kind::NotFound,
            format!(
                "history incomplete: no peer asked had {} block(s), first {first}",
                missing.len()
            ),
        )
        .into_pyerr();
        err.value(py).setattr("summary", &summary)?;
        return Err(err);
    }
    Ok(summary)
}

/// Checks a CAR export of `topic` as the node's import would, and more: every block against
/// its CID; every dag-cbor block shaped like an event as a signed event (signatures in one
/// batch) of `topic`. Other blocks (linked from bodies) need only match their CID.
fn verify_car(topic: &str, bytes: &[u8]) -> Result<Value, String> {
    let parsed =
        car::read_car(bytes).map_err(|e| format!("the exported CAR failed verification: {e}"))?;
    let held: HashSet<Cid> = parsed.blocks.iter().map(|(c, _)| *c).collect();
    let events: Vec<&(Cid, Vec<u8>)> = parsed
        .blocks
        .iter()
        .filter(|(c, d)| c.codec() == DAG_CBOR && tidings_ipld_schema::Event::decode(d).is_ok())
        .collect();
    let checked = tidings_ipld_schema::verify_batch(events.iter().map(|(c, d)| (c, d.as_slice())));
    let mut complete = parsed.roots.iter().all(|r| held.contains(r));
    for ((cid, _), result) in events.iter().zip(checked) {
        let event = result
            .map_err(|e| format!("the exported CAR failed verification: block {cid}: {e}"))?;
        if event.topic != topic {
            return Err(format!(
                "the exported CAR failed verification: event {cid} is on {:?}, not {topic:?}",
                event.topic
            ));
        }
        complete &= event.prev.iter().all(|p| held.contains(p));
    }
    Ok(serde_json::json!({
        "blocks": parsed.blocks.len(),
        "events": events.len(),
        "bytes": bytes.len(),
        "roots": parsed.roots.iter().map(Cid::to_string).collect::<Vec<_>>(),
        "complete": complete,
    }))
}
