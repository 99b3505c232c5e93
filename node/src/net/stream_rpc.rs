//! Requests and answers over one long-lived stream per peer: the hot path's protocols,
//! `/tidings/publish/3`, `/tidings/replicate/2` and `/tidings/deliver/2` (docs/protocols.md).
//!
//! libp2p's request-response opens a substream for every request, negotiates its protocol,
//! arms a timer, and passes the request and its answer through the swarm task on both sides.
//! On a 2-core machine that was about 0.7 ms of each hop of a publish, whatever its size. Here
//! the requester keeps one stream open to each peer and writes its requests on it, each tagged
//! with an id; the responder reads them in order, hands each to the node as it comes (many are
//! served at once), and writes each answer with its request's id as soon as it is ready.
//! Once the stream is open nothing passes through the swarm task.
//!
//! A frame is a `u32` big-endian length of what follows, a `u64` big-endian request id, and the
//! message, CBOR-encoded exactly as the request-response protocol of the same name encodes it
//! ([`super::wire`]). A peer that does not speak the protocol is asked over request-response
//! instead: [`CallError::Unsupported`] gives the request back for that.
//!
//! The responder admits each request as the swarm does ([`Admission`]: penalties and the one
//! rate limit a peer has over every protocol); a frame over [`MAX_MESSAGE`] or one that does not
//! decode penalises its sender and closes the stream.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::upgrade::NegotiationError;
use libp2p::{PeerId, StreamProtocol};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::codec::MAX_MESSAGE;
use super::codec::check_encoded;
use super::limits::Admission;
use super::peer_queues::PeerQueues;
use super::{Inbound, NetError, Network};

/// How long a caller waits for its answer (as request-response waits).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer that lacks the protocol is asked over request-response before the stream
/// is tried again (it may have been upgraded and restarted since).
const UNSUPPORTED_FOR: Duration = Duration::from_secs(60);
/// Bytes of a frame before its message: the request id.
const ID_LEN: usize = 8;

/// How many bytes of frames a writer gathers before it writes them to the stream. yamux sends
/// every write to a stream as a frame of its own and flushes the connection after each: without
/// the gathering, a frame's head and its message went as two TCP segments, each a send on this
/// side and a wake-up on the other, and a batch of answers as two per answer. (Three nodes at
/// 5,000 events/s on two cores: 5,100–9,000 sends a second per node, about 4 per event.)
const GATHER: usize = 64 * 1024;

/// Why a call got no answer on the stream.
#[derive(Debug)]
pub enum CallError<Req> {
    /// The peer does not speak the protocol: the request, unsent, to ask another way.
    Unsupported(Req),
    /// The stream failed or the answer did not come in time.
    Failed(NetError),
}

/// Encodes a message as the body of a frame.
pub fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    cbor4ii::serde::to_vec(Vec::new(), msg).map_err(io::Error::other)
}

/// Encodes a message this node is about to send on `protocol`, refusing one over
/// [`MAX_MESSAGE`] ([`check_encoded`]: a bug where it was built, which its receiver would
/// penalise).
fn encode_checked<T: Serialize>(protocol: &str, msg: &T) -> io::Result<Vec<u8>> {
    let body = encode(msg)?;
    check_encoded(protocol, body.len(), MAX_MESSAGE as usize)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(body)
}

/// Decodes the body of a frame.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame (not flushed). The node's writers check the message's size first
/// ([`encode_checked`]).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, id: u64, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(ID_LEN + body.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a message of {} bytes is over the limit", body.len()),
        )
    })?;
    let mut head = [0u8; 4 + ID_LEN];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4..].copy_from_slice(&id.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(body).await
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer sent a frame no honest peer sends (its sender's fault).
    #[error("{0}")]
    Malformed(String),
}

/// Reads one frame: its request id and message bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<u64, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len < ID_LEN {
        return Err(FrameError::Malformed(format!(
            "frame of {len} bytes, shorter than its id"
        )));
    }
    if (len - ID_LEN) as u64 > MAX_MESSAGE {
        return Err(FrameError::Malformed(format!(
            "message over the {MAX_MESSAGE}-byte limit"
        )));
    }
    let mut id = [0u8; ID_LEN];
    r.read_exact(&mut id).await?;
    buf.resize(len - ID_LEN, 0);
    r.read_exact(buf).await?;
    Ok(u64::from_be_bytes(id))
}

/// A request waiting for its answer.
struct Call<Req, Resp> {
    req: Req,
    answer: oneshot::Sender<Result<Resp, CallError<Req>>>,
}

type Calls<Req, Resp> = Arc<Mutex<HashMap<u64, Call<Req, Resp>>>>;

/// The requester's side of one protocol: a stream per peer, opened on the first call and again
/// after it breaks.
pub struct Client<Req, Resp> {
    protocol: StreamProtocol,
    control: libp2p_stream::Control,
    peers: PeerQueues<Call<Req, Resp>>,
    /// Peers found not to speak the protocol, and when.
    unsupported: Arc<Mutex<HashMap<PeerId, Instant>>>,
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Calls on `protocol`, opening streams through `control`.
    pub fn new(protocol: StreamProtocol, control: libp2p_stream::Control) -> Self {
        Client {
            protocol,
            control,
            peers: PeerQueues::default(),
            unsupported: Arc::default(),
        }
    }

    /// Queues `req` for `peer` now (a caller's order of calls is the order written) and returns
    /// its answer, to wait for after.
    pub fn call(
        &self,
        peer: PeerId,
        req: Req,
    ) -> impl Future<Output = Result<Resp, CallError<Req>>> + Send + 'static + use<Req, Resp> {
        let (answer, rx) = oneshot::channel();
        let early = self.queue(peer, Call { req, answer });
        async move {
            if let Some(e) = early {
                return Err(e);
            }
            match tokio::time::timeout(CALL_TIMEOUT, rx).await {
                Ok(Ok(answered)) => answered,
                Ok(Err(_)) => Err(CallError::Failed(NetError::Unreachable {
                    peer,
                    reason: "the stream closed before the answer".into(),
                })),
                Err(_) => Err(CallError::Failed(NetError::Unreachable {
                    peer,
                    reason: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
                })),
            }
        }
    }

    /// Hands `call` to `peer`'s stream task (started if there is none); an error to answer at
    /// once if it cannot go on a stream.
    fn queue(&self, peer: PeerId, call: Call<Req, Resp>) -> Option<CallError<Req>> {
        if self.lacks_protocol(&peer) {
            return Some(CallError::Unsupported(call.req));
        }
        let (control, protocol) = (self.control.clone(), self.protocol.clone());
        let unsupported = self.unsupported.clone();
        // Not queued only on a poisoned lock (a bug elsewhere): the call is dropped, and its
        // caller told the stream closed.
        self.peers.push(peer, call, |rx| {
            run_stream(control, protocol, peer, rx, unsupported)
        });
        None
    }

    fn lacks_protocol(&self, peer: &PeerId) -> bool {
        let Ok(mut u) = self.unsupported.lock() else {
            return false;
        };
        match u.get(peer) {
            Some(since) if since.elapsed() < UNSUPPORTED_FOR => true,
            Some(_) => {
                u.remove(peer);
                false
            }
            None => false,
        }
    }
}

/// One peer's stream: writes the queued calls as frames and routes each answer to its call,
/// until the stream breaks; then every call still waiting fails (or, if the peer turned out
/// not to speak the protocol, gets its request back to send another way).
///
/// A stream that ends cleanly before any answer is opened once more and its calls written
/// again: the peer's node dropped it unread. libp2p-stream hands a protocol's inbound streams
/// to its acceptor through a channel of one slot and drops a stream that finds the slot full,
/// which happens when several nodes open streams to a busy node at once; its opener then reads
/// the end of the stream. Without the second try every call on it failed, and a publish fell
/// over to another member for nothing. Writing a call twice is harmless: every handler takes
/// a block it already holds as done (content-addressed).
async fn run_stream<Req, Resp>(
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    peer: PeerId,
    mut queued: mpsc::UnboundedReceiver<Call<Req, Resp>>,
    unsupported: Arc<Mutex<HashMap<PeerId, Instant>>>,
) where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    let mut again: Vec<Call<Req, Resp>> = Vec::new();
    let mut tried_again = false;
    let (ended, calls) = loop {
        let calls: Calls<Req, Resp> = Arc::default();
        let opened = if tried_again {
            // Bounded: a peer that is gone (its stream also ends cleanly when its connection
            // does) fails over as it did before, after at most this long.
            tokio::time::timeout(REOPEN_TIMEOUT, control.open_stream(peer, protocol.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(libp2p_stream::OpenStreamError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "could not open the stream again in time",
                    )))
                })
        } else {
            control.open_stream(peer, protocol.clone()).await
        };
        let ended = match opened {
            Ok(stream) => {
                let (mut r, mut w) = stream.split();
                let answered = std::sync::atomic::AtomicBool::new(false);
                let first = std::mem::take(&mut again);
                let e = tokio::select! {
                    e = read_answers(&mut r, &calls, &answered) => e,
                    // The write can meet the peer's refusal first: a lazily negotiated stream
                    // reports it on whichever side touches the stream next.
                    e = write_calls(&mut w, protocol.as_ref(), peer, first, &mut queued, &calls) => e,
                };
                let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
                if !answered && !tried_again && e.kind() == io::ErrorKind::UnexpectedEof {
                    again = take_calls(&calls);
                    tried_again = true;
                    tracing::debug!(%peer, %protocol, calls = again.len(), "stream ended before any answer (dropped unread by the peer's node): opening it again");
                    continue;
                }
                Ended::from_error(e, answered)
            }
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => Ended::Unsupported,
            Err(e) => Ended::Broken(e.to_string()),
        };
        break (ended, calls);
    };
    queued.close();
    let mut left = again;
    left.extend(take_calls(&calls));
    while let Ok(call) = queued.try_recv() {
        left.push(call);
    }
    match ended {
        Ended::Unsupported => {
            tracing::info!(%peer, %protocol, "peer lacks the stream protocol: asking it over request-response");
            if let Ok(mut u) = unsupported.lock() {
                u.insert(peer, Instant::now());
            }
            for call in left {
                let _ = call.answer.send(Err(CallError::Unsupported(call.req)));
            }
        }
        Ended::Broken(reason) => {
            if !left.is_empty() {
                tracing::debug!(%peer, %protocol, calls = left.len(), %reason, "stream broke with calls waiting");
            }
            for call in left {
                let e = NetError::Unreachable {
                    peer,
                    reason: reason.clone(),
                };
                let _ = call.answer.send(Err(CallError::Failed(e)));
            }
        }
    }
}

/// How long a stream dropped unread may take to open again before its calls fail.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// The calls still waiting on a stream, in the order they were written.
fn take_calls<Req, Resp>(calls: &Calls<Req, Resp>) -> Vec<Call<Req, Resp>> {
    match calls.lock() {
        Ok(mut c) => {
            let mut ids: Vec<u64> = c.keys().copied().collect();
            ids.sort_unstable();
            ids.into_iter().filter_map(|id| c.remove(&id)).collect()
        }
        Err(_) => Vec::new(),
    }
}

/// How a peer's stream ended.
enum Ended {
    /// The peer refused the protocol: nothing written reached its node.
    Unsupported,
    /// The stream broke (connection lost, peer gone, bad answer).
    Broken(String),
}

impl Ended {
    /// With lazy negotiation (the swarm's setting) a peer's refusal of the protocol comes as
    /// the first read's or write's error, not when the stream opens.
    fn from_error(e: io::Error, answered: bool) -> Ended {
        let refused = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<NegotiationError>())
            .is_some_and(|n| matches!(n, NegotiationError::Failed));
        if refused && !answered {
            Ended::Unsupported
        } else {
            Ended::Broken(e.to_string())
        }
    }
}

async fn read_answers<R, Req, Resp>(
    r: &mut R,
    calls: &Calls<Req, Resp>,
    answered: &std::sync::atomic::AtomicBool,
) -> io::Error
where
    R: AsyncRead + Unpin,
    Resp: DeserializeOwned,
{
    let mut buf = Vec::new();
    loop {
        let id = match read_frame(r, &mut buf).await {
            Ok(id) => id,
            Err(FrameError::Io(e)) => return e,
            Err(FrameError::Malformed(m)) => return io::Error::new(io::ErrorKind::InvalidData, m),
        };
        answered.store(true, std::sync::atomic::Ordering::Relaxed);
        let resp = match decode::<Resp>(&buf) {
            Ok(resp) => resp,
            Err(e) => return e,
        };
        let call = calls.lock().ok().and_then(|mut c| c.remove(&id));
        // No call: it timed out and its caller left (or the peer made the id up).
        if let Some(call) = call {
            let _ = call.answer.send(Ok(resp));
        }
    }
}

/// Writes `first` (calls to write again on a new stream), then the calls as they are queued.
async fn write_calls<W, Req, Resp>(
    w: &mut W,
    protocol: &str,
    peer: PeerId,
    first: Vec<Call<Req, Resp>>,
    queued: &mut mpsc::UnboundedReceiver<Call<Req, Resp>>,
    calls: &Calls<Req, Resp>,
) -> io::Error
where
    W: AsyncWrite + Unpin,
    Req: Serialize,
{
    let mut w = futures::io::BufWriter::with_capacity(GATHER, w);
    let mut next_id = 0u64;
    let mut first = first.into_iter();
    loop {
        let next = match first.next() {
            Some(call) => Some(call),
            None => queued.recv().await,
        };
        let Some(mut call) = next else {
            return io::Error::other("the node stopped");
        };
        // Everything queued goes out, gathered into as few writes as fit, before one flush.
        loop {
            match encode_checked(protocol, &call.req) {
                Ok(body) => {
                    next_id += 1;
                    if let Ok(mut c) = calls.lock() {
                        // Callers that gave up leave their calls here until the stream ends.
                        if c.len() >= 4096 {
                            c.retain(|_, call| !call.answer.is_closed());
                        }
                        c.insert(next_id, call);
                    }
                    if let Err(e) = write_frame(&mut w, next_id, &body).await {
                        return e;
                    }
                }
                // A bug where the request was built (logged): this call fails, the stream
                // goes on.
                Err(e) => {
                    let reason = e.to_string();
                    let e = NetError::Unreachable { peer, reason };
                    let _ = call.answer.send(Err(CallError::Failed(e)));
                }
            }
            match first.next().map(Ok).unwrap_or_else(|| queued.try_recv()) {
                Ok(more) => call = more,
                Err(_) => break,
            }
        }
        if let Err(e) = w.flush().await {
            return e;
        }
    }
}

/// Whether this node serves the stream protocols. A build with `test-faults` leaves them out
/// when [`OLD_PROTOCOLS_ENV`] is set, acting as a node from before them: how the tests check
/// that other nodes then ask it over request-response.
pub fn served() -> bool {
    #[cfg(feature = "test-faults")]
    if std::env::var_os(OLD_PROTOCOLS_ENV).is_some() {
        tracing::warn!("test-only: the stream protocols are not served");
        return false;
    }
    true
}

/// Environment variable that makes a `test-faults` build leave the stream protocols out.
pub const OLD_PROTOCOLS_ENV: &str = "TIDINGS_TEST_OLD_PROTOCOLS";

/// Environment variable that makes a `test-faults` build drop the first N inbound streams of
/// each stream protocol unread, as libp2p-stream drops one that finds its acceptor busy.
pub const DROP_INBOUND_ENV: &str = "TIDINGS_TEST_DROP_INBOUND_STREAMS";

/// What the responder side of a protocol hands the node: wraps a request as the
/// [`Inbound`] the request-response protocol of the same name would, and words a refusal.
pub struct Serve<Req, Resp> {
    /// The protocol.
    pub protocol: &'static str,
    /// The request, with its sender, where its answer goes and its protocol, as the node
    /// takes it.
    pub wrap: fn(PeerId, Req, oneshot::Sender<Resp>, &'static str) -> Inbound,
    /// An answer refusing a request, with why.
    pub refused: fn(String) -> Resp,
}

/// Serves inbound streams of `serve.protocol` until the node stops: each request is admitted
/// ([`Admission`]), handed up through `inbound`, and answered on the stream when the node
/// answers it.
pub async fn serve<Req, Resp>(
    net: Network,
    admission: Admission,
    inbound: mpsc::Sender<Inbound>,
    serve: Serve<Req, Resp>,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let Ok(mut incoming) = net
        .streams
        .clone()
        .accept(StreamProtocol::new(serve.protocol))
    else {
        tracing::error!(protocol = %serve.protocol, "stream protocol already being served");
        return;
    };
    let serve = Arc::new(serve);
    #[cfg(feature = "test-faults")]
    let mut to_drop: u64 = std::env::var(DROP_INBOUND_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while let Some((peer, stream)) = incoming.next().await {
        #[cfg(feature = "test-faults")]
        if to_drop > 0 {
            to_drop -= 1;
            tracing::warn!(%peer, protocol = %serve.protocol, "test-only: inbound stream dropped unread");
            drop(stream);
            continue;
        }
        if net.is_penalised(&peer) {
            tracing::debug!(%peer, protocol = %serve.protocol, "stream from a penalised peer refused");
            continue;
        }
        let (net, admission, inbound, serve) = (
            net.clone(),
            admission.clone(),
            inbound.clone(),
            serve.clone(),
        );
        tokio::spawn(async move {
            let (mut r, w) = stream.split();
            let (answers, mut out) = mpsc::unbounded_channel::<(u64, Resp)>();
            let reading = read_requests(&net, &admission, &inbound, &serve, peer, &mut r, answers);
            // The writer ends once the reader has ended and every answer has gone; then the
            // stream is closed, so the requester reads to its end.
            let writing = write_answers(w, serve.protocol, &mut out);
            let (why, ()) = futures::join!(reading, writing);
            tracing::debug!(%peer, protocol = %serve.protocol, reason = %why, "inbound stream ended");
        });
    }
}

/// Writes the answers as they come, those ready together gathered into one write (see
/// [`GATHER`]) and flushed once; closes `w` when `out` ends or a write fails.
async fn write_answers<W: AsyncWrite + Unpin, Resp: Serialize>(
    w: W,
    protocol: &str,
    out: &mut mpsc::UnboundedReceiver<(u64, Resp)>,
) {
    let mut w = futures::io::BufWriter::with_capacity(GATHER, w);
    'answering: while let Some((id, resp)) = out.recv().await {
        if write_answer(&mut w, protocol, id, resp).await.is_err() {
            break;
        }
        while let Ok((id, resp)) = out.try_recv() {
            if write_answer(&mut w, protocol, id, resp).await.is_err() {
                break 'answering;
            }
        }
        if w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.close().await;
}

/// Writes one answer. One that cannot go (a bug, logged) is skipped: its requester times out.
async fn write_answer<W: AsyncWrite + Unpin, Resp: Serialize>(
    w: &mut W,
    protocol: &str,
    id: u64,
    resp: Resp,
) -> io::Result<()> {
    let Ok(body) = encode_checked(protocol, &resp) else {
        return Ok(());
    };
    drop(resp);
    write_frame(w, id, &body).await
}

/// Reads a peer's requests and hands each up, its answer to go to `answers` with its id;
/// returns why it stopped.
async fn read_requests<R, Req, Resp>(
    net: &Network,
    admission: &Admission,
    inbound: &mpsc::Sender<Inbound>,
    serve: &Serve<Req, Resp>,
    peer: PeerId,
    r: &mut R,
    answers: mpsc::UnboundedSender<(u64, Resp)>,
) -> String
where
    R: AsyncRead + Unpin,
    Req: DeserializeOwned + Send + 'static,
    Resp: Send + 'static,
{
    let protocol = serve.protocol;
    let mut buf = Vec::new();
    loop {
        let id = match read_frame(r, &mut buf).await {
            Ok(id) => id,
            Err(FrameError::Io(e)) => return e.to_string(),
            Err(FrameError::Malformed(m)) => {
                net.penalise(peer, &format!("{protocol} request: {m}"))
                    .await;
                return m;
            }
        };
        if let Err(denied) = admission.admit(peer, protocol) {
            let _ = answers.send((id, (serve.refused)(denied.why.clone())));
            if denied.flood.is_some() {
                net.disconnect(peer).await;
                return denied.why;
            }
            continue;
        }
        let req = match decode::<Req>(&buf) {
            Ok(req) => req,
            Err(e) => {
                let why = format!("{protocol} request: undecodable message: {e}");
                net.penalise(peer, &why).await;
                let _ = answers.send((id, (serve.refused)(why.clone())));
                return why;
            }
        };
        let (tx, rx) = oneshot::channel();
        if inbound
            .send((serve.wrap)(peer, req, tx, protocol))
            .await
            .is_err()
        {
            return "the node stopped".into();
        }
        let answers = answers.clone();
        let refused = serve.refused;
        tokio::spawn(async move {
            let resp = rx
                .await
                .unwrap_or_else(|_| refused("the node dropped the request".into()));
            let _ = answers.send((id, resp));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_ones_are_refused() {
        let mut out = Vec::new();
        write_frame(&mut out, 7, &encode(&vec![1u32, 2]).expect("enc"))
            .await
            .expect("write");
        write_frame(&mut out, 8, b"").await.expect("write");
        let mut r = futures::io::Cursor::new(out);
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut r, &mut buf).await.expect("frame"), 7);
        assert_eq!(decode::<Vec<u32>>(&buf).expect("dec"), vec![1, 2]);
        assert_eq!(read_frame(&mut r, &mut buf).await.expect("frame"), 8);
        assert!(buf.is_empty());
        assert!(matches!(
            read_frame(&mut r, &mut buf).await,
            Err(FrameError::Io(_))
        ));
        let short = 3u32.to_be_bytes().to_vec();
        let mut r = futures::io::Cursor::new(short);
        assert!(matches!(
            read_frame(&mut r, &mut buf).await,
            Err(FrameError::Malformed(_))
        ));
        let huge = ((MAX_MESSAGE + 64) as u32).to_be_bytes().to_vec();
        let mut r = futures::io::Cursor::new(huge);
        assert!(matches!(
            read_frame(&mut r, &mut buf).await,
            Err(FrameError::Malformed(m)) if m.contains("limit")
        ));
        assert!(decode::<Vec<u32>>(b"\xff\xfe").is_err());
    }

    /// A stream that records each write it is given (as yamux makes each one a frame and a
    /// TCP segment) and each flush.
    #[derive(Default)]
    struct Recording {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        closed: bool,
    }

    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.flushes += 1;
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.closed = true;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// The frames in what `w` was given, as (id, message).
    async fn frames_in(w: &Recording) -> Vec<(u64, Vec<u32>)> {
        let mut r = futures::io::Cursor::new(w.writes.concat());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Ok(id) = read_frame(&mut r, &mut buf).await {
            got.push((id, decode::<Vec<u32>>(&buf).expect("dec")));
        }
        got
    }

    #[tokio::test]
    async fn queued_requests_go_out_as_one_write_and_one_flush() {
        let (tx, mut queued) = mpsc::unbounded_channel::<Call<Vec<u32>, Vec<u32>>>();
        let mut answers = Vec::new();
        for k in 0..20u32 {
            let (answer, rx) = oneshot::channel();
            tx.send(Call {
                req: vec![k; 3],
                answer,
            })
            .expect("queue");
            answers.push(rx);
        }
        drop(tx);
        let calls: Calls<Vec<u32>, Vec<u32>> = Arc::default();
        let mut w = Recording::default();
        let why = write_calls(
            &mut w,
            "/test/1",
            PeerId::random(),
            Vec::new(),
            &mut queued,
            &calls,
        )
        .await;
        assert!(why.to_string().contains("stopped"), "{why}");
        // Twenty frames of head and message: forty writes before they were gathered.
        assert_eq!((w.writes.len(), w.flushes), (1, 1));
        let want: Vec<(u64, Vec<u32>)> =
            (0..20u32).map(|k| (u64::from(k) + 1, vec![k; 3])).collect();
        assert_eq!(frames_in(&w).await, want);
        assert_eq!(
            calls.lock().expect("calls").len(),
            20,
            "every call waits for its answer"
        );
    }

    #[tokio::test]
    async fn answers_ready_together_go_out_as_one_write_then_the_stream_closes() {
        let (tx, mut out) = mpsc::unbounded_channel::<(u64, Vec<u32>)>();
        for id in [5u64, 3, 9] {
            tx.send((id, vec![id as u32])).expect("queue");
        }
        drop(tx);
        let mut w = Recording::default();
        write_answers(&mut w, "/test/1", &mut out).await;
        assert_eq!(
            (w.writes.len(), w.flushes),
            (1, 1),
            "one write, flushed, then closed"
        );
        assert!(w.closed);
        assert_eq!(
            frames_in(&w).await,
            vec![(5, vec![5]), (3, vec![3]), (9, vec![9])]
        );
    }
}
