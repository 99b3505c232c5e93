//! `tidings sub`: prints each matching event as one JSON line, and keeps doing so across
//! dropped connections and node restarts.
//!
//! It subscribes over a WebSocket. When the connection ends for any reason but a refusal, it
//! reconnects with backoff and resumes without gap or duplicate:
//!
//! * a durable subscription resumes by name. Each event is acknowledged only once printed, so
//!   what was not printed comes back from the durable's backlog; what was printed but whose
//!   acknowledgement did not reach the node (it was killed) comes back too, and is skipped.
//! * a plain subscription resumes with a replay (`since`) from a minute (for authors' clocks)
//!   before the newest event it printed or the last time it heard from the node, whichever is
//!   earlier, never before where it started; what it printed already is skipped (by CID).

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tidings_matcher::Filter;
use tidings_node::age::now_ms;
use tidings_node::client::{Client, ClientError, SubscribeAsk, WsStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::cli::ApiSource;

/// Replays start this long before the events they must cover: events are replayed by their
/// `time`, which is their author's clock.
const SLACK_MS: u64 = 60_000;
/// First wait before reconnecting; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the node is pinged.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A connection the node has said nothing on (not even a pong) for this long is dead.
const SILENT_FOR: Duration = Duration::from_secs(45);
/// Printed CIDs are pruned (those too old to be replayed again) every this many events.
const PRUNE_EVERY: usize = 1024;

/// What `tidings sub` was asked for.
#[derive(Debug)]
pub struct Args {
    /// The filter.
    pub filter: String,
    /// A durable subscription's name.
    pub durable: Option<String>,
    /// Replay from this time (ms) first.
    pub since: Option<u64>,
    /// Exit after this many events.
    pub count: Option<u64>,
    /// Reconnect when the connection ends.
    pub reconnect: bool,
}

/// Where to resume from, and what not to print twice.
struct Resume {
    /// Never replay from before this: where the subscription started.
    floor: u64,
    /// CID → `time` of the events printed that a replay could send again.
    printed: HashMap<String, u64>,
    /// The newest `time` printed.
    newest: Option<u64>,
    /// The CID of the last event printed.
    last_cid: Option<String>,
    /// When the node was last heard from (ms, this machine's clock).
    alive: u64,
    /// Events printed (for `--count`).
    count: u64,
}

impl Resume {
    /// Where a plain subscription's replay starts after a reconnection. Never decreases.
    fn since(&self) -> u64 {
        let covered = self.newest.map_or(self.alive, |t| t.min(self.alive));
        covered.saturating_sub(SLACK_MS).max(self.floor)
    }

    /// Notes an event printed.
    fn printed(&mut self, cid: &str, time: u64) {
        self.printed.insert(cid.to_string(), time);
        self.newest = Some(self.newest.map_or(time, |n| n.max(time)));
        self.last_cid = Some(cid.to_string());
        self.count += 1;
        if self.printed.len().is_multiple_of(PRUNE_EVERY) {
            // A replay never reaches back past `since`, so older events cannot come again.
            let since = self.since();
            self.printed.retain(|_, t| *t >= since);
        }
    }
}

/// How one connection ended.
enum End {
    /// `--count` events printed.
    Done,
    /// Asked to stop (Ctrl-C, SIGTERM, SIGHUP).
    Stopped,
    /// The connection ended; why. Reconnecting may resume it.
    Lost(String),
    /// Reconnecting would not help.
    Fatal(anyhow::Error),
}

/// Runs `tidings sub` until `--count` events, a signal, or (with `--no-reconnect`, or on a
/// refusal) the end of the connection.
pub async fn run(source: ApiSource, token: Option<String>, args: Args) -> Result<()> {
    // Checked here too, so a typo is pointed at before any connection.
    Filter::parse(&args.filter).map_err(|e| anyhow!("bad filter: {}", e.pointed(&args.filter)))?;
    let started = now_ms();
    let mut resume = Resume {
        floor: args.since.unwrap_or(started.saturating_sub(SLACK_MS)),
        printed: HashMap::new(),
        newest: None,
        last_cid: None,
        alive: started,
        count: 0,
    };
    let stop = crate::signals::shutdown();
    tokio::pin!(stop);
    let mut out = std::io::stdout().lock();
    let mut connected_once = false;
    let mut wait = BACKOFF_FIRST;
    loop {
        let attempt = connect(&source, &token, &args, &resume, connected_once).await;
        let why = match attempt {
            Ok(ws) => {
                if connected_once {
                    match &args.durable {
                        Some(name) => eprintln!("reconnected: resuming durable {name}"),
                        None => eprintln!(
                            "reconnected: resuming with the events since {:.1} s ago (those printed already are skipped)",
                            now_ms().saturating_sub(resume.since()) as f64 / 1000.0
                        ),
                    }
                } else {
                    eprintln!("subscribed: {}", args.filter);
                }
                connected_once = true;
                wait = BACKOFF_FIRST;
                resume.alive = now_ms();
                match pump(ws, &mut resume, &mut out, &args, stop.as_mut()).await {
                    End::Done | End::Stopped => return Ok(()),
                    End::Fatal(e) => return Err(e),
                    End::Lost(why) if !args.reconnect => bail!("connection lost: {why}"),
                    End::Lost(why) => format!("connection lost: {why}"),
                }
            }
            Err(e) if !connected_once || !args.reconnect || !worth_retrying(&e) => {
                return Err(e.into());
            }
            Err(e) => format!("reconnecting: {}", brief(&e)),
        };
        eprintln!("{why}; next try in {:.1} s", wait.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.as_mut() => return Ok(()),
        }
        wait = (wait * 2).min(BACKOFF_MAX);
    }
}

/// Opens the WebSocket: as asked the first time; after that, a durable by name (and the last
/// event printed, so the node can replace a connection it has not noticed is gone), a plain
/// subscription from where it can resume.
async fn connect(
    source: &ApiSource,
    token: &Option<String>,
    args: &Args,
    resume: &Resume,
    again: bool,
) -> Result<WsStream, ClientError> {
    let url = source.url().map_err(|e| ClientError::Unreachable {
        api: format!("{source:?}"),
        reason: e.to_string(),
    })?;
    let client = Client::new(&url, token.clone());
    let since = match (&args.durable, again) {
        (_, false) => args.since,
        (Some(_), true) => None,
        (None, true) => Some(resume.since()),
    };
    let last = match (&args.durable, again) {
        (Some(_), true) => resume.last_cid.as_deref(),
        _ => None,
    };
    client
        .subscribe_ws(&SubscribeAsk {
            filter: &args.filter,
            durable: args.durable.as_deref(),
            since,
            last_event_id: last,
        })
        .await
}

/// A failed reconnection in a few words (the full message's advice was given at the start).
fn brief(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { api, reason } => {
            format!("cannot reach the node at {api} ({reason})")
        }
        ClientError::Transport { api, source } => {
            format!("cannot reach the node at {api} ({source})")
        }
        other => other.to_string(),
    }
}

/// Whether a failed reconnection is worth another try: the node unreachable or unavailable,
/// or a durable still held by the connection that dropped (409), but not a refusal of what
/// was asked (a bad filter, a wrong token).
fn worth_retrying(e: &ClientError) -> bool {
    match e {
        ClientError::Api { status, .. } => *status == 409 || *status >= 500,
        ClientError::Transport { .. } | ClientError::Unreachable { .. } => true,
    }
}

/// Prints what arrives on one connection until it ends.
async fn pump(
    mut ws: WsStream,
    resume: &mut Resume,
    out: &mut impl Write,
    args: &Args,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> End {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = stop.as_mut() => {
                close(&mut ws).await;
                return End::Stopped;
            }
            _ = ping.tick() => {
                if heard.elapsed() >= SILENT_FOR {
                    return End::Lost(format!("no answer from the node for {} s", SILENT_FOR.as_secs()));
                }
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return End::Lost(e.to_string());
                }
            }
            m = ws.next() => {
                heard = Instant::now();
                resume.alive = now_ms();
                match m {
                    None => return End::Lost("the node closed the connection".into()),
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    Some(Ok(Message::Text(text))) => {
                        if let Err(end) = take(&mut ws, text.as_str(), resume, out, args).await {
                            return end;
                        }
                        if args.count.is_some_and(|n| resume.count >= n) {
                            close(&mut ws).await;
                            return End::Done;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (f.code, f.reason.to_string()))
                            .unwrap_or((CloseCode::Normal, String::new()));
                        if code == CloseCode::Normal && reason.contains("newer connection") {
                            return End::Fatal(anyhow!(
                                "another connection took over this durable subscription ({reason})"
                            ));
                        }
                        return End::Lost(if reason.is_empty() {
                            "the node closed the connection".into()
                        } else {
                            reason
                        });
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// One event: printed unless it was already, then acknowledged (durable).
async fn take(
    ws: &mut WsStream,
    text: &str,
    resume: &mut Resume,
    out: &mut impl Write,
    args: &Args,
) -> Result<(), End> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| End::Fatal(anyhow!("the node sent something that is not an event: {e}")))?;
    let cid = v.get("cid").and_then(Value::as_str).unwrap_or_default();
    let time = v.get("time").and_then(Value::as_u64).unwrap_or(0);
    if !resume.printed.contains_key(cid) {
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|e| End::Fatal(anyhow!("writing to stdout: {e}")))?;
        resume.printed(cid, time);
    }
    if args.durable.is_some() {
        let ack = serde_json::json!({ "ack": cid }).to_string();
        ws.send(Message::Text(ack.into()))
            .await
            .map_err(|e| End::Lost(e.to_string()))?;
    }
    Ok(())
}

/// Closes the connection and waits (briefly) for the node's answer, so a durable's last
/// acknowledgements are in before this process exits.
async fn close(ws: &mut WsStream) {
    let _ = ws.close(None).await;
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
