//! The slow-subscriber cut-off on a real node process (docs/api.md, "Order and delivery"): a
//! subscriber whose queue of `SUBSCRIBER_QUEUE` events stays full for `SLOW_GRACE` is cut off,
//! a WebSocket with close code 1013 and the documented reason, an SSE stream with
//! `event: error` and the same reason, each after the events it had queued; a healthy
//! subscriber on the same node gets every event in order; `/metrics` counts each cut-off; and
//! no publish waits much longer than the grace.
//!
//! The stalled clients are real sockets that stop reading: the WebSocket one from the start
//! (and it reads again as soon as its cut-off is counted: the node gives up on a WebSocket that
//! takes nothing for 45 s), the SSE one after a computed number of events, so the two queues
//! fill one after the other and each cut-off is one subscriber's alone (the node waits for full
//! queues one at a time). The kernel takes some of what the node writes before the node's writes block, so each
//! stalled client's receive buffer is made small, and the test computes how many events the
//! queue and every buffer on the way can hold at most (the node's send buffer can grow to
//! `tcp_wmem`'s maximum): if a stalled client has not been cut off once that many were published
//! and the grace has passed, the test fails.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tidings_node::api::SSE_AHEAD;
use tidings_node::pubsub::local::{SLOW_GRACE, SUBSCRIBER_QUEUE};
use tidings_tests::{NodeProcess, SseReader, poll};

/// The reason the node gives, word for word as docs/api.md documents it.
const TOO_SLOW: &str = "subscription closed by the node: the subscriber fell too far behind";
/// The counter of cut-offs (docs/operations.md, "Metrics").
const CUT_OFFS: &str = "tidings_delivery_drops_total{reason=\"too_slow\"}";
/// The WebSocket close code of a cut-off: 1013, "try again later" (docs/api.md).
const TRY_AGAIN_LATER: u16 = 1013;
const FILTER: &str = "/slow/**";
/// Bytes of padding in each event's body: large enough that the socket buffers hold few events
/// (the queue is counted in events), small enough that the store stays small.
const PAD: usize = 8 * 1024;
/// What a stalled client asks for as its receive buffer (the kernel doubles it).
const STALLED_RCVBUF: usize = 4096;
/// User-space buffers between a subscriber's queue and its client, at most: hyper's write
/// buffer (8 KiB + 100 × 4 KiB), tungstenite's write and read buffers (128 KiB each), the
/// client's 8 KiB `BufReader`, rounded up.
const USER_SPACE: usize = 1 << 20;
/// Concurrent publishers, each on its own topic (one stream each), so the store's group commit
/// has company.
const PUBLISHERS: usize = 16;
/// Slack on top of the grace for one publish on a loaded 2-core machine.
const PUBLISH_MARGIN: Duration = Duration::from_secs(2);

#[test]
fn stalled_sse_and_websocket_subscribers_are_cut_off_and_a_healthy_one_gets_everything()
-> Result<()> {
    let docs = include_str!("../../docs/api.md");
    ensure!(
        docs.contains(TOO_SLOW)
            && docs.contains(&format!("**{TRY_AGAIN_LATER}**"))
            && docs.contains("`event: error`"),
        "docs/api.md no longer documents the reason and code this test checks"
    );
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let api = node.api();
    let addr: SocketAddr = node
        .api
        .strip_prefix("http://")
        .context("api url")?
        .parse()?;
    let t0 = Instant::now();

    let healthy = Healthy::start(&node.api)?;
    let (ws_socket, ws_rcvbuf) = small_socket(addr)?;
    let (sse_socket, sse_rcvbuf) = small_socket(addr)?;
    // Events the queue and every buffer on the way to one stalled client can hold, at most:
    // each event is at least PAD bytes on the wire.
    let buffered = send_buffer_max()? + ws_rcvbuf.max(sse_rcvbuf) + USER_SPACE;
    let absorbed = buffered.div_ceil(PAD) + 2;
    // The SSE client stops reading this many events after the WebSocket one did: its queue
    // fills only once the WebSocket one's cut-off is over, however much the buffers took.
    let sse_reads = absorbed + 1;
    // The SSE stream also holds what its task handed on ahead of hyper's writes.
    let bound = sse_reads + SUBSCRIBER_QUEUE + absorbed + SSE_AHEAD;
    let ws = Staller::websocket(ws_socket, addr)?;
    let sse = Staller::sse(sse_socket, addr, sse_reads)?;

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    // When a publisher found the bound reached (both queues must be full by then).
    let capped: Arc<Mutex<Option<Instant>>> = Arc::default();
    let topics: Vec<String> = (0..PUBLISHERS).map(|i| format!("/slow/{i}")).collect();
    let publishing = Instant::now();
    let threads: Vec<_> = topics
        .iter()
        .map(|topic| {
            let (api, topic) = (api.clone(), topic.clone());
            let (stop, count, slowest, capped) =
                (stop.clone(), count.clone(), slowest.clone(), capped.clone());
            std::thread::spawn(move || -> Result<Vec<String>> {
                let body = json!({"pad": "x".repeat(PAD)});
                let mut cids = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if count.fetch_add(1, Ordering::Relaxed) >= bound as u64 {
                        if let Ok(mut c) = capped.lock() {
                            c.get_or_insert_with(Instant::now);
                        }
                        break;
                    }
                    let t = Instant::now();
                    let (code, v) = api.publish(&topic, &body)?;
                    let took = t.elapsed();
                    ensure!(code == 200, "publish to {topic}: {code} {v}");
                    if let Ok(mut s) = slowest.lock() {
                        *s = (*s).max(took);
                    }
                    // One publisher per topic: seq n is cids[n - 1].
                    let seq = v["seq"].as_u64().context("seq")?;
                    ensure!(seq == cids.len() as u64 + 1, "{topic}: seq {seq}");
                    cids.push(v["cid"].as_str().context("cid")?.to_string());
                }
                Ok(cids)
            })
        })
        .collect();
    // Each cut-off comes one grace after its queue filled, before the bound is reached; however
    // long publishing that many takes on this machine.
    let mut cut_at = Vec::new();
    let cuts = poll(Duration::from_secs(300), || {
        let n = api.metric(CUT_OFFS)?;
        while (cut_at.len() as u64) < n {
            cut_at.push(publishing.elapsed());
        }
        // The first is the WebSocket's: it reads again, while publishing goes on for the SSE.
        if n >= 1 {
            ws.resume();
        }
        if n >= 2 {
            return Some(true);
        }
        let capped = (*capped.lock().ok()?)?;
        (capped.elapsed() > SLOW_GRACE + Duration::from_secs(5)).then_some(false)
    });
    stop.store(true, Ordering::Relaxed);
    let mut published: HashMap<String, Vec<String>> = HashMap::new();
    for (topic, t) in topics.iter().zip(threads) {
        let cids = t
            .join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
        published.insert(topic.clone(), cids);
    }
    let total: usize = published.values().map(Vec::len).sum();
    ensure!(
        cuts == Some(true),
        "{} of the 2 stalled subscribers cut off: {total} events published (the queues and \
         buffers hold at most {bound}), {:?} since the first",
        cut_at.len(),
        publishing.elapsed()
    );
    let slowest = *slowest.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    ensure!(
        slowest <= SLOW_GRACE + PUBLISH_MARGIN,
        "a publish took {slowest:?} while subscribers stalled (grace {SLOW_GRACE:?})"
    );

    // Reading again, each got what the node had queued for it, in order, then the end.
    let ws_got = ws.drain(Duration::from_secs(60))?;
    check_stalled("websocket", &ws_got, &published, SUBSCRIBER_QUEUE, total)?;
    let sse_got = sse.drain(Duration::from_secs(60))?;
    check_stalled(
        "sse",
        &sse_got,
        &published,
        sse_reads + SUBSCRIBER_QUEUE,
        total,
    )?;

    // A sentinel last on every stream: once the healthy subscriber has them all, everything
    // published before them has come too (each stream arrives in `seq` order).
    let mut sentinels = HashSet::new();
    for (topic, cids) in published.iter_mut() {
        let (code, v) = api.publish(topic, &json!({"sentinel": true}))?;
        ensure!(code == 200, "sentinel publish: {code} {v}");
        let cid = v["cid"].as_str().context("cid")?.to_string();
        cids.push(cid.clone());
        sentinels.insert(cid);
    }
    let got = healthy.until(&sentinels, Duration::from_secs(60))?;
    for (topic, cids) in &published {
        let have: Vec<(u64, &str)> = got
            .iter()
            .filter(|g| &g.topic == topic)
            .map(|g| (g.seq, g.cid.as_str()))
            .collect();
        let want: Vec<(u64, &str)> = (1..).zip(cids.iter().map(String::as_str)).collect();
        ensure!(
            have == want,
            "the healthy subscriber got {} events of {topic} (first difference at {:?}), want \
             all {} in order",
            have.len(),
            have.iter().zip(&want).position(|(a, b)| a != b),
            want.len()
        );
    }
    ensure!(
        got.len() == total + sentinels.len(),
        "the healthy subscriber got {} events, {} published",
        got.len(),
        total + sentinels.len()
    );
    ensure!(
        api.metric(CUT_OFFS) == Some(2),
        "two cut-offs counted, no more (the healthy subscriber was not cut off)"
    );
    let status = node.status()?;
    ensure!(
        status["subscriptions"] == 1,
        "only the healthy subscription is left: {status}"
    );
    eprintln!(
        "slow_subscriber: {total} published in {:.1}s (bound {bound}), cut-offs at {:.1?}s, \
         slowest publish {:.0} ms (grace {} ms); websocket got {} then close 1013, sse {} then \
         its error event; the healthy subscriber all {}; {:.1}s in all",
        publishing.elapsed().as_secs_f64(),
        cut_at.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
        slowest.as_secs_f64() * 1000.0,
        SLOW_GRACE.as_millis(),
        ws_got.len(),
        sse_got.len(),
        got.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Checks what a stalled subscriber got before it was cut off: every stream from seq 1 without
/// a gap, the events published, at least `at_least` of them and not all of them.
fn check_stalled(
    who: &str,
    got: &[Got],
    published: &HashMap<String, Vec<String>>,
    at_least: usize,
    total: usize,
) -> Result<()> {
    let mut next: HashMap<&str, u64> = HashMap::new();
    for g in got {
        let want = next.entry(g.topic.as_str()).or_insert(1);
        ensure!(
            g.seq == *want,
            "the {who} subscriber got {} seq {} where {want} was due",
            g.topic,
            g.seq
        );
        *want += 1;
        let cids = published.get(&g.topic).context("unpublished topic")?;
        ensure!(
            cids.get(g.seq as usize - 1) == Some(&g.cid),
            "{} seq {}: not the published event",
            g.topic,
            g.seq
        );
    }
    ensure!(
        got.len() >= at_least && got.len() < total,
        "the {who} subscriber got {} events before it was cut off: want at least {at_least} \
         (what it read, and its full queue) and fewer than the {total} published",
        got.len()
    );
    Ok(())
}

/// An event as a subscriber got it.
#[derive(Debug, Clone)]
struct Got {
    cid: String,
    topic: String,
    seq: u64,
}

impl Got {
    fn parse(json: &str) -> Result<Got> {
        let v: Value = serde_json::from_str(json).context("event JSON")?;
        Ok(Got {
            cid: v["cid"].as_str().context("cid")?.to_string(),
            topic: v["topic"].as_str().context("topic")?.to_string(),
            seq: v["seq"].as_u64().context("seq")?,
        })
    }
}

/// A TCP connection to `addr` with a small receive buffer (set before connecting, so the
/// window offered is small from the start), and the buffer size the kernel gave it.
fn small_socket(addr: SocketAddr) -> Result<(TcpStream, usize)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_recv_buffer_size(STALLED_RCVBUF)?;
    socket.connect(&addr.into())?;
    let rcvbuf = socket.recv_buffer_size()?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok((stream, rcvbuf))
}

/// The subscription URL (`/v1/subscribe?filter=`) on `addr` with `scheme`.
fn subscribe_url(scheme: &str, addr: SocketAddr) -> Result<reqwest::Url> {
    Ok(reqwest::Url::parse_with_params(
        &format!("{scheme}://{addr}/v1/subscribe"),
        &[("filter", FILTER)],
    )?)
}

/// A subscriber on its own thread that reads a given number of events, then nothing until
/// told to go on, then everything until the node ends the subscription.
struct Staller {
    resume: mpsc::Sender<()>,
    result: std::thread::JoinHandle<Result<Vec<Got>>>,
}

impl Staller {
    /// Runs `next` (the next event, or how the subscription ended) on a thread: `reads` times,
    /// then again once resumed, until it ends.
    fn spawn(
        reads: usize,
        mut next: impl FnMut() -> Result<Option<Got>> + Send + 'static,
    ) -> Staller {
        let (resume, resumed) = mpsc::channel::<()>();
        let result = std::thread::spawn(move || -> Result<Vec<Got>> {
            let mut got = Vec::new();
            while got.len() < reads {
                got.push(next()?.context("ended before it stalled")?);
            }
            // Reads nothing until told to go on (or the test gave up on it).
            let stalled = Instant::now();
            resumed.recv().context("never resumed")?;
            // The node drops a WebSocket that takes nothing for 45 s without a close frame: on
            // a machine too slow to fill the queue well within that, this says so.
            let stalled = stalled.elapsed();
            while let Some(g) =
                next().map_err(|e| anyhow::anyhow!("{e:#} (after a stall of {stalled:.1?})"))?
            {
                got.push(g);
            }
            Ok(got)
        });
        Staller { resume, result }
    }

    /// A WebSocket subscriber on `stream` that stalls from the start; it ends well only with a
    /// close frame 1013 and the documented reason.
    fn websocket(stream: TcpStream, addr: SocketAddr) -> Result<Staller> {
        let url = subscribe_url("ws", addr)?;
        let (mut ws, resp) = tungstenite::client::client(url.as_str(), stream)
            .map_err(|e| anyhow::anyhow!("websocket handshake: {e}"))?;
        ensure!(resp.status() == 101, "websocket upgrade: {}", resp.status());
        let mut events = 0;
        Ok(Staller::spawn(0, move || {
            loop {
                match ws.read() {
                    Ok(tungstenite::Message::Text(t)) => {
                        events += 1;
                        return Got::parse(t.as_str()).map(Some);
                    }
                    Ok(tungstenite::Message::Close(Some(f))) => {
                        ensure!(
                            u16::from(f.code) == TRY_AGAIN_LATER && f.reason.as_str() == TOO_SLOW,
                            "the websocket subscriber was closed with {} {:?}, want \
                             {TRY_AGAIN_LATER} {TOO_SLOW:?}",
                            u16::from(f.code),
                            f.reason.as_str()
                        );
                        // Nothing may come after a close frame; tungstenite answers it here.
                        let after = ws.read();
                        ensure!(
                            matches!(after, Err(tungstenite::Error::ConnectionClosed)),
                            "after the close frame: {after:?}"
                        );
                        return Ok(None);
                    }
                    Ok(tungstenite::Message::Close(None)) => bail!("closed without a code"),
                    Ok(_) => {}
                    Err(e) => bail!(
                        "the websocket ended without a close frame after {events} events: {e}"
                    ),
                }
            }
        }))
    }

    /// An SSE subscriber on `stream` that reads `reads` events, then stalls; it ends well
    /// only with `event: error`, the documented reason, and then the end of the stream.
    fn sse(mut stream: TcpStream, addr: SocketAddr, reads: usize) -> Result<Staller> {
        let url = subscribe_url("http", addr)?;
        let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: tidings\r\nAccept: text/event-stream\r\n\r\n"
        )?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status)?;
        ensure!(status.starts_with("HTTP/1.1 200"), "SSE: {status}");
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
        }
        let mut frames = SseReader::new(reader);
        let mut events = 0;
        Ok(Staller::spawn(reads, move || {
            let f = frames.next_frame().with_context(|| {
                format!("the SSE stream ended without an error event after {events} events")
            })?;
            if f.event.is_empty() {
                events += 1;
                return Got::parse(&f.data).map(Some);
            }
            ensure!(
                f.event == "error" && f.data == TOO_SLOW,
                "the SSE subscriber got event {:?} with {:?}, want \"error\" with {TOO_SLOW:?}",
                f.event,
                f.data
            );
            match frames.next_frame() {
                None => Ok(None),
                Some(f) => bail!("after the error event the stream went on: {f:?}"),
            }
        }))
    }

    /// Lets it read again (calling it again changes nothing).
    fn resume(&self) {
        let _ = self.resume.send(());
    }

    /// Lets it read on; what it got before the node ended the subscription as documented.
    fn drain(self, timeout: Duration) -> Result<Vec<Got>> {
        self.resume();
        let done = poll(timeout, || self.result.is_finished().then_some(()));
        ensure!(
            done.is_some(),
            "the subscription did not end within {timeout:?}"
        );
        self.result
            .join()
            .map_err(|_| anyhow::anyhow!("subscriber thread panicked"))?
    }
}

/// The most a TCP send buffer can grow to by itself (the node's, for a client that does not
/// read): the third field of `net.ipv4.tcp_wmem`.
fn send_buffer_max() -> Result<usize> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .context("reading net.ipv4.tcp_wmem")?;
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .context("tcp_wmem has no maximum")
}

/// A WebSocket subscriber that reads as fast as events come, on its own thread.
struct Healthy {
    rx: mpsc::Receiver<Result<Got>>,
}

impl Healthy {
    fn start(api: &str) -> Result<Healthy> {
        let addr: SocketAddr = api.strip_prefix("http://").context("api url")?.parse()?;
        let (mut ws, _) =
            tungstenite::connect(subscribe_url("ws", addr)?.as_str()).context("connect")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let got = match ws.read() {
                    Ok(tungstenite::Message::Text(t)) => Got::parse(t.as_str()),
                    Ok(tungstenite::Message::Close(f)) => {
                        Err(anyhow::anyhow!("the healthy subscriber was closed: {f:?}"))
                    }
                    Ok(_) => continue,
                    Err(e) => Err(anyhow::anyhow!("the healthy subscriber: {e}")),
                };
                let end = got.is_err();
                if tx.send(got).is_err() || end {
                    return;
                }
            }
        });
        Ok(Healthy { rx })
    }

    /// Everything it got until every one of `sentinels` came.
    fn until(&self, sentinels: &HashSet<String>, timeout: Duration) -> Result<Vec<Got>> {
        let deadline = Instant::now() + timeout;
        let mut waiting = sentinels.clone();
        let mut got = Vec::new();
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let g = self.rx.recv_timeout(left).with_context(|| {
                format!(
                    "the healthy subscriber: {} sentinels missing after {} events",
                    waiting.len(),
                    got.len()
                )
            })??;
            waiting.remove(&g.cid);
            got.push(g);
        }
        Ok(got)
    }
}
