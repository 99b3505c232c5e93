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

/// `publish_many`'s default number of events awaiting acknowledgement at once: the point
/// where the node's group commit is at its best (bench/README.md, persist-window).
const DEFAULT_IN_FLIGHT: usize = 256;
/// The most a publish stream takes under way per connection: the node's own limit.
const MAX_IN_FLIGHT: usize = tidings_node::api::publish_stream::IN_FLIGHT;

/// What a publish answered, as `Published`.
fn published(v: &Value) -> Published {
    Published {
        cid: text(v, "cid"),
        seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0),
        copies: v.get("copies").and_then(Value::as_u64).unwrap_or(0),
        heads: strings(v, "heads"),
    }
}

/// The answers of publishing `frames` (JSON bodies) on `topic` through one publish stream,
/// at most `in_flight` unanswered at once, in order; after the first refusal nothing more is
/// sent. Returns one answer per frame (None where it was not acknowledged) and the refusal
/// with the lowest index, if any.
async fn publish_all(
    http: &tidings_node::client::Client,
    topic: &str,
    frames: &[String],
    in_flight: usize,
) -> (Vec<Option<Value>>, Option<(usize, Failure)>) {
    let mut answers: Vec<Option<Value>> = vec![None; frames.len()];
    let mut refused: Option<(usize, Failure)> = None;
    let stream = match http.publish_stream().await {
        Ok(s) => s,
        Err(e) => return (answers, Some((0, Failure::from(e)))),
    };
    let mut pending = futures::stream::FuturesOrdered::new();
    for (i, frame) in frames.iter().enumerate() {
        while pending.len() >= in_flight {
            if let Some((j, answer)) = pending.next().await {
                file(&mut answers, &mut refused, j, answer);
            }
        }
        if refused.is_some() {
            break;
        }
        match stream.send(topic, frame).await {
            Ok(answer) => pending.push_back(async move { (i, answer.await) }),
            Err(e) => {
                file(&mut answers, &mut refused, i, Err(e));
                break;
            }
        }
    }
    while let Some((j, answer)) = pending.next().await {
        file(&mut answers, &mut refused, j, answer);
    }
    (answers, refused)
}

/// Files the answer to frame `j`: its value, or a refusal (the one with the lowest index is
/// kept).
fn file(
    answers: &mut [Option<Value>],
    refused: &mut Option<(usize, Failure)>,
    j: usize,
    answer: Result<Value, tidings_node::client::ClientError>,
) {
    match answer {
        Ok(v) => answers[j] = Some(v),
        Err(e) => {
            if refused.as_ref().is_none_or(|(i, _)| j < *i) {
                *refused = Some((j, Failure::from(e)));
            }
        }
    }
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
        Ok(published(&v))
    }

    /// Publishes every body of `bodies` on `topic`, in order, through one publish stream:
    /// up to `in_flight` events wait for their acknowledgement at once, so a long list costs
    /// about one round trip, not one per event. Returns one `Published` per body, each durable
    /// on a majority of the rendezvous set, as `publish` promises. Every body is converted
    /// before anything is sent, so a body that cannot be published raises with nothing
    /// published. After a refusal no further event is sent; the exception (the class
    /// `publish` would raise) carries `index`, the position of the refused body, and
    /// `published`, one entry per body: its `Published`, or None where it was not
    /// acknowledged (refused, not sent, or unanswered when the connection dropped: publish
    /// one again only if the topic's heads do not show it). Ctrl-C ends the call at once, with
    /// the events sent so far stored or not, as a dropped connection leaves them.
    #[pyo3(signature = (topic, bodies, *, in_flight=DEFAULT_IN_FLIGHT))]
    fn publish_many(
        &self,
        py: Python<'_>,
        topic: &str,
        bodies: &Bound<'_, PyAny>,
        in_flight: usize,
    ) -> PyResult<Vec<Published>> {
        if !(1..=MAX_IN_FLIGHT).contains(&in_flight) {
            return Err(errors::bad_request(format!(
                "in_flight must be 1 to {MAX_IN_FLIGHT}, not {in_flight}"
            )));
        }
        let mut frames = Vec::new();
        for body in bodies.try_iter()? {
            frames.push(to_json(&body?)?.to_string());
        }
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let (answers, refused) = wait(py, publish_all(&self.http, topic, &frames, in_flight))?;
        match refused {
            None => Ok(answers.iter().flatten().map(published).collect()),
            Some((index, failure)) => {
                let message = format!(
                    "event {index} of {} was not published: {}",
                    frames.len(),
                    failure.message
                );
                let err = Failure { message, ..failure }.into_pyerr();
                let value = err.value(py);
                value.setattr("index", index)?;
                let list: Vec<Option<Published>> =
                    answers.iter().map(|a| a.as_ref().map(published)).collect();
                value.setattr("published", list)?;
                Err(err)
            }
        }
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
