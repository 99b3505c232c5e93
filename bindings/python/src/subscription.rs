//! `Client.subscribe`: a WebSocket to `/v1/subscribe` with `encoding=dag-cbor`, so every event
//! arrives as its CID and block and is verified here (hash and signature) before Python sees
//! it. A frame that fails is a `VerificationError` and ends the subscription: a node that
//! forged one event is not believed for the next.
//!
//! Two tasks on the client runtime own the socket: one reads and verifies frames into a bounded
//! queue (when Python stops reading, the socket stops being read, and the node eventually cuts
//! the subscriber off as too slow rather than lose events silently), one writes acks and the
//! final close frame. `close()` waits for the writer, so acks are on the wire before it returns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use tidings_ipld_schema::Cid;
use tokio::net::TcpStream;
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::Client;
use crate::errors::{self, Failure, Kind};
use crate::event::Event;
use crate::runtime::{runtime, wait, wait_for};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Verified events waiting for Python.
const QUEUE: usize = 1024;
/// How long `close()` waits for the writer to put acks and the close frame on the wire.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the reader hands over.
enum Item {
    Event(Box<Event>),
    /// The subscription failed; raised once, then iteration ends.
    Failed(Failure),
    /// Ended by `close()`.
    Ended,
}

/// State shared by the Python object and the two socket tasks.
struct Shared {
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>,
    /// Items taken for an `async for` step that was cancelled before it got them: served
    /// first, so cancelling a wait loses nothing.
    stash: Mutex<VecDeque<Item>>,
    stop: watch::Sender<bool>,
    /// Set once `close()` ran or a failure was raised: iteration is over.
    finished: AtomicBool,
    acks: mpsc::UnboundedSender<String>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    bytes: Arc<AtomicU64>,
    events: AtomicU64,
}

impl Shared {
    /// The next item, holding the queue so that nobody else takes one until the guard goes.
    /// Cancel-safe: dropping the future loses no item.
    async fn next_locked(&self) -> (OwnedMutexGuard<mpsc::Receiver<Item>>, Item) {
        let mut guard = self.rx.clone().lock_owned().await;
        if self.finished.load(Ordering::SeqCst) {
            return (guard, Item::Ended);
        }
        if let Some(item) = self.stash.lock().ok().and_then(|mut s| s.pop_front()) {
            return (guard, item);
        }
        let mut stop = self.stop.subscribe();
        let item = tokio::select! {
            biased;
            _ = stopped(&mut stop) => Item::Ended,
            i = guard.recv() => i.unwrap_or(Item::Ended),
        };
        (guard, item)
    }

    fn put_back(&self, item: Item) {
        if let Ok(mut s) = self.stash.lock() {
            s.push_front(item);
        }
    }

    /// The Python result of an item: `Ok(None)` is the end of iteration.
    fn settle(&self, item: Item) -> PyResult<Option<Event>> {
        match item {
            Item::Event(e) => {
                self.events.fetch_add(1, Ordering::Relaxed);
                Ok(Some(*e))
            }
            Item::Failed(f) => {
                self.finish();
                Err(f.into_pyerr())
            }
            Item::Ended => {
                self.finished.store(true, Ordering::SeqCst);
                Ok(None)
            }
        }
    }

    /// Stops both tasks (the writer sends what acks it has, then a close frame).
    fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
    }
}

/// A live subscription. Iterate it with `for` or `async for`: each item is an `Event` that
/// was verified here. Iteration ends after `close()`; it raises `Unavailable` if the node ends
/// the subscription (too slow, shutting down) or the connection breaks, and
/// `VerificationError` if a frame fails verification (the subscription is then closed).
/// Events still queued when it is closed are dropped: a durable subscription gets those it
/// did not acknowledge again when it comes back.
#[pyclass(module = "tidings", frozen)]
pub(crate) struct Subscription {
    shared: Arc<Shared>,
    filter: String,
    durable: Option<String>,
}

/// Opens the WebSocket and starts the tasks; errors are the node's (bad filter, 409 for a
/// durable name reused with another filter, 401, 503) or a transport failure.
pub(crate) fn open(
    py: Python<'_>,
    client: &Client,
    filter: &str,
    durable: Option<String>,
    since: Option<u64>,
) -> PyResult<Subscription> {
    // The node would refuse it too; checked here so the error keeps the filter's position.
    tidings_matcher::Filter::parse(filter).map_err(|e| errors::bad_filter(&e))?;
    let mut params: Vec<(&str, String)> = vec![
        ("filter", filter.to_string()),
        ("encoding", "dag-cbor".to_string()),
    ];
    if let Some(d) = &durable {
        params.push(("durable", d.clone()));
    }
    if let Some(s) = since {
        params.push(("since", s.to_string()));
    }
    let url = reqwest::Url::parse_with_params(&format!("{}/v1/subscribe", client.api), &params)
        .map_err(|e| errors::bad_request(format!("bad API URL {:?}: {e}", client.api)))?;
    let ws_url = match url.scheme() {
        "http" => url.as_str().replacen("http", "ws", 1),
        "https" => url.as_str().replacen("https", "wss", 1),
        other => {
            return Err(errors::bad_request(format!(
                "bad API URL {:?}: the scheme must be http, not {other}",
                client.api
            )));
        }
    };
    let mut request = ws_url
        .into_client_request()
        .map_err(|e| errors::bad_request(format!("bad subscription request: {e}")))?;
    if let Some(t) = &client.token {
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| errors::bad_request("the token is not a valid header value"))?;
        request.headers_mut().insert("authorization", value);
    }
    let api = client.api.clone();
    let (socket, _) = wait(py, tokio_tungstenite::connect_async(request))?
        .map_err(|e| connect_failure(&api, e))?;
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let (stop, _) = watch::channel(false);
    let bytes = Arc::new(AtomicU64::new(0));
    let rt = runtime()?;
    let reader = rt.spawn(read(stream, tx, stop.subscribe(), bytes.clone()));
    let writer = rt.spawn(write(sink, acks_rx, stop.subscribe()));
    Ok(Subscription {
        shared: Arc::new(Shared {
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            stash: Mutex::new(VecDeque::new()),
            stop,
            finished: AtomicBool::new(false),
            acks: acks_tx,
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(Some(reader)),
            bytes,
            events: AtomicU64::new(0),
        }),
        filter: filter.to_string(),
        durable,
    })
}

/// The node's refusal (its status and `{"error"}` text) or why it could not be reached.
fn connect_failure(api: &str, e: tungstenite::Error) -> Failure {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            Failure::from_status(status, message)
        }
        other => Failure::new(
            Kind::Unavailable,
            format!(
                "cannot reach the node at {api} (is a node running? start one, or point api= / TIDINGS_API at it): {other}"
            ),
        ),
    }
}

/// Resolves once `close()` (or the subscription's end) sets the stop flag, or its sender is gone.
/// The flag's guard is dropped here: it must not be held across an await.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A binary frame: the CID's bytes, then the block; verified against each other.
fn decode_frame(frame: &[u8]) -> Result<Event, String> {
    let mut cursor = std::io::Cursor::new(frame);
    let cid = Cid::read_bytes(&mut cursor)
        .map_err(|e| format!("a frame from the node does not start with a CID: {e}"))?;
    let at = usize::try_from(cursor.position()).unwrap_or(frame.len());
    Event::verified(cid, frame.get(at..).unwrap_or_default().to_vec())
}

/// Reads frames, verifies them and queues the results until the end, a failure or `stop`.
async fn read(
    mut stream: SplitStream<Socket>,
    tx: mpsc::Sender<Item>,
    mut stop: watch::Receiver<bool>,
    bytes: Arc<AtomicU64>,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            m = stream.next() => m,
        };
        let item = match msg {
            Some(Ok(Message::Binary(b))) => {
                bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                match decode_frame(&b) {
                    Ok(e) => Item::Event(Box::new(e)),
                    Err(why) => Item::Failed(Failure::new(Kind::Verification, why)),
                }
            }
            Some(Ok(Message::Text(t))) => {
                bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                Item::Failed(Failure::new(
                    Kind::Verification,
                    "the node sent a text frame on a dag-cbor subscription: an event without its block cannot be verified",
                ))
            }
            Some(Ok(Message::Close(frame))) => Item::Failed(Failure::new(
                Kind::Unavailable,
                match frame {
                    Some(f) if !f.reason.is_empty() => {
                        format!("the node ended the subscription: {}", f.reason)
                    }
                    Some(f) => format!(
                        "the node ended the subscription (close code {})",
                        u16::from(f.code)
                    ),
                    None => "the node ended the subscription".to_string(),
                },
            )),
            Some(Ok(_)) => continue,
            Some(Err(e)) => Item::Failed(Failure::new(
                Kind::Unavailable,
                format!("the subscription's connection broke: {e}"),
            )),
            None => Item::Failed(Failure::new(
                Kind::Unavailable,
                "the node closed the subscription's connection",
            )),
        };
        let last = !matches!(item, Item::Event(_));
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            sent = tx.send(item) => if sent.is_err() { return },
        }
        if last {
            return;
        }
    }
}

/// Sends acks as they come; at `stop`, the acks already queued, then a close frame.
async fn write(
    mut sink: SplitSink<Socket, Message>,
    mut acks: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    let ack = |cid: String| Message::text(serde_json::json!({ "ack": cid }).to_string());
    loop {
        tokio::select! {
            biased;
            a = acks.recv() => match a {
                Some(cid) => {
                    if sink.send(ack(cid)).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            _ = stopped(&mut stop) => break,
        }
    }
    while let Ok(cid) = acks.try_recv() {
        if sink.send(ack(cid)).await.is_err() {
            return;
        }
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "closed by the client".into(),
        })))
        .await;
    let _ = sink.close().await;
}

/// Resolves one `async for` step on the event loop's thread (scheduled with
/// `call_soon_threadsafe`): sets the future's result, or, if the step was cancelled meanwhile,
/// puts the item back for the next one. Dropped unused (the loop closed), it puts it back too.
#[pyclass(module = "tidings")]
struct Resolve {
    future: Py<PyAny>,
    item: Mutex<Option<Item>>,
    shared: Arc<Shared>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

#[pymethods]
impl Resolve {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let item = self.item.lock().ok().and_then(|mut i| i.take());
        let Some(item) = item else { return Ok(()) };
        let future = self.future.bind(py);
        if future.call_method0("done")?.is_truthy()? {
            self.shared.put_back(item);
        } else {
            match self.shared.settle(item) {
                Ok(Some(event)) => {
                    future.call_method1("set_result", (Py::new(py, event)?,))?;
                }
                Ok(None) => {
                    let stop = PyStopAsyncIteration::new_err(());
                    future.call_method1("set_exception", (stop.value(py),))?;
                }
                Err(e) => {
                    future.call_method1("set_exception", (e.value(py),))?;
                }
            }
        }
        if let Some(done) = self.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = done.send(());
        }
        Ok(())
    }
}

impl Drop for Resolve {
    fn drop(&mut self) {
        if let Some(item) = self.item.get_mut().ok().and_then(Option::take) {
            self.shared.put_back(item);
        }
    }
}

#[pymethods]
impl Subscription {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next verified event; blocks (GIL released) until one arrives.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        let shared = self.shared.clone();
        let item = wait(py, async move { shared.next_locked().await.1 })?;
        self.shared.settle(item)
    }

    /// The next verified event, or None if `timeout` seconds pass first (or the subscription
    /// was closed). Raises as iteration does.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Event>> {
        let limit = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(errors::bad_request(format!(
                    "timeout must be a number of seconds >= 0, not {t}"
                )));
            }
            None => None,
        };
        let shared = self.shared.clone();
        match wait_for(py, async move { shared.next_locked().await.1 }, limit)? {
            Some(item) => self.shared.settle(item),
            None => Ok(None),
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// An awaitable of the next verified event (an asyncio future resolved from the client
    /// runtime; the event loop is never blocked). Cancelling it loses no event.
    fn __anext__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.shared.finished.load(Ordering::SeqCst)
            && self
                .shared
                .stash
                .lock()
                .map(|s| s.is_empty())
                .unwrap_or(true)
        {
            return Ok(None);
        }
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let future = event_loop.call_method0("create_future")?;
        let (future_ref, loop_ref) = (future.clone().unbind(), event_loop.unbind());
        let shared = self.shared.clone();
        runtime()?.spawn(async move {
            let (guard, item) = shared.next_locked().await;
            let (done_tx, done_rx) = oneshot::channel();
            let scheduled = Python::attach(|py| -> PyResult<()> {
                let resolve = Py::new(
                    py,
                    Resolve {
                        future: future_ref,
                        item: Mutex::new(Some(item)),
                        shared: shared.clone(),
                        done: Mutex::new(Some(done_tx)),
                    },
                )?;
                loop_ref.call_method1(py, "call_soon_threadsafe", (resolve,))?;
                Ok(())
            });
            // Not scheduled (the loop is closed): `Resolve` was dropped and put the item back.
            if scheduled.is_ok() {
                let _ = done_rx.await;
            }
            drop(guard);
        });
        Ok(Some(future.unbind()))
    }

    /// Acknowledges `event` (an `Event` or its CID) on a durable subscription: the network
    /// stops keeping it, and everything before it in its stream, for you. A no-op on others.
    fn ack(&self, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let cid = match event.cast::<Event>() {
            Ok(e) => e.get().cid().to_string(),
            Err(_) => event
                .extract::<String>()
                .map_err(|_| errors::bad_request("ack takes an Event or a CID string"))?,
        };
        if self.durable.is_some() {
            // Fails only once the writer has stopped, when acks can no longer be sent anyway.
            let _ = self.shared.acks.send(cid);
        }
        Ok(())
    }

    /// Ends the subscription: sends pending acks and a close frame (waiting up to 5 s for them
    /// to be written), then iteration stops. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.finish();
        let writer = self.shared.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            let _ = wait_for(py, w, Some(CLOSE_WAIT))?;
        }
        if let Some(r) = self.shared.reader.lock().ok().and_then(|mut r| r.take()) {
            r.abort();
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// Whether it has ended (closed, or failed and raised).
    #[getter]
    fn closed(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
    }

    /// The filter it was opened with.
    #[getter]
    fn filter(&self) -> &str {
        &self.filter
    }

    /// The durable subscription's name, or None.
    #[getter]
    fn durable(&self) -> Option<&str> {
        self.durable.as_deref()
    }

    /// Bytes of WebSocket payload received so far (CIDs and blocks).
    #[getter]
    fn received_bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Events handed to Python so far.
    #[getter]
    fn received_events(&self) -> u64 {
        self.shared.events.load(Ordering::Relaxed)
    }

    fn __repr__(&self) -> String {
        format!(
            "Subscription(filter={:?}, durable={:?}, closed={})",
            self.filter,
            self.durable,
            self.closed()
        )
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Garbage-collected without close(): stop the tasks (the writer still says goodbye).
        self.shared.finish();
    }
}

/// `since=`: ms since the Unix epoch (0 = from the start), a `datetime`, or a `timedelta` ago.
pub(crate) fn since_ms(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    let bad = || {
        errors::bad_request(
            "since must be ms since the Unix epoch (0 = from the start), a datetime, or a timedelta (that long ago)",
        )
    };
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(bad());
    }
    if let Ok(ms) = v.extract::<u64>() {
        return Ok(ms);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if v.hasattr("total_seconds")? {
        let secs: f64 = v.call_method0("total_seconds")?.extract()?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        return Ok(now_ms.saturating_sub((secs * 1000.0) as u64));
    }
    if v.hasattr("timestamp")? {
        let secs: f64 = v.call_method0("timestamp")?.extract()?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        return Ok((secs * 1000.0) as u64);
    }
    Err(bad())
}
