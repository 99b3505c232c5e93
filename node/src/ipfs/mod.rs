//! The IPFS backend (`tidings node --ipfs-api URL`): every block the node stores is mirrored
//! into an IPFS node over its HTTP RPC, history nobody in the tidings network holds is asked of
//! IPFS, and `tidings pin` imports and pins a stream there (docs/operations.md#ipfs).
//!
//! IPFS is never on the publish path: the mirror reads what to send from the store's arrival
//! log, behind the commits, so an acknowledgement never waits on IPFS, and an IPFS that is down,
//! slow or answering garbage costs the node nothing but a backlog, which it drains when IPFS is
//! back. Blocks read from IPFS are verified exactly as a peer's are.

mod car_stream;
pub mod mirror;
pub mod pin;
pub mod rpc;

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidings_ipld_schema::Cid;

pub use rpc::{Rpc, RpcError, parse_api_url};

/// After a failure to reach IPFS, history fetches skip it for this long (the mirror keeps
/// probing), so a gap repair never waits on an IPFS known to be down.
const SKIP_WHEN_DOWN: Duration = Duration::from_secs(5);
/// While IPFS stays down or faulty, the warning is repeated this often (with the backlog).
const REWARN: Duration = Duration::from_secs(60);
/// Most CIDs remembered as fetched from IPFS (so not put back); past it the set starts over.
const MAX_HELD: usize = 1 << 20;

/// How the backend is doing, as the last calls found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Nothing asked of IPFS yet since the node started.
    Starting,
    /// The last call succeeded.
    Up,
    /// IPFS cannot be reached, or answers errors.
    Down,
    /// IPFS answers, but not what it should (a wrong CID, garbage).
    Faulty,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Up => "up",
            State::Down => "down",
            State::Faulty => "faulty",
        }
    }
}

#[derive(Debug)]
struct Health {
    state: State,
    /// Why it is not up (the last error), for status and logs.
    cause: Option<String>,
    since: Instant,
    last_unreachable: Option<Instant>,
    last_warned: Option<Instant>,
}

/// Counters of the backend, for `/metrics` and status.
#[derive(Debug, Default)]
pub struct Counters {
    /// Blocks IPFS took with the right CID.
    pub mirrored: AtomicU64,
    /// Log entries not yet in IPFS (the mirror's backlog).
    pub queued: AtomicU64,
    /// Log entries that left the store (retention) before IPFS took them.
    pub skipped: AtomicU64,
    /// Failed calls, by kind: unreachable, status, garbage, unsupported.
    pub errors: [AtomicU64; 4],
    /// Blocks fetched from IPFS that verified and were kept.
    pub fetched: AtomicU64,
    /// Blocks from IPFS that failed verification and were refused.
    pub refused: AtomicU64,
}

/// The backend: the RPC client and what it has seen.
#[derive(Debug)]
pub struct Ipfs {
    rpc: Rpc,
    health: Mutex<Health>,
    /// Blocks fetched from IPFS: the mirror need not put them back. A hint, lost on restart
    /// (then they are put again, which IPFS takes as a no-op).
    held: Mutex<HashSet<Cid>>,
    /// Counters.
    pub counters: Counters,
}

impl Ipfs {
    /// A backend for the RPC at `url` (any form [`parse_api_url`] takes).
    pub fn new(url: &str) -> Result<Ipfs, String> {
        let base = parse_api_url(url)?;
        let rpc = Rpc::new(&base).map_err(|e| e.to_string())?;
        Ok(Ipfs {
            rpc,
            health: Mutex::new(Health {
                state: State::Starting,
                cause: None,
                since: Instant::now(),
                last_unreachable: None,
                last_warned: None,
            }),
            held: Mutex::new(HashSet::new()),
            counters: Counters::default(),
        })
    }

    /// Notes blocks that came from IPFS, which the mirror then does not put back.
    pub fn note_held(&self, cids: impl IntoIterator<Item = Cid>) {
        if let Ok(mut held) = self.held.lock() {
            if held.len() >= MAX_HELD {
                held.clear();
            }
            held.extend(cids);
        }
    }

    /// Whether `cid` came from IPFS (forgotten once asked: the mirror asks once per block).
    pub fn take_held(&self, cid: &Cid) -> bool {
        self.held.lock().is_ok_and(|mut h| h.remove(cid))
    }

    /// The RPC client.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.health.lock().map_or(State::Down, |h| h.state)
    }

    /// Whether a history fetch should ask IPFS now: not when it was unreachable moments ago.
    pub fn worth_asking(&self) -> bool {
        self.health.lock().map_or(true, |h| {
            h.last_unreachable
                .is_none_or(|t| t.elapsed() >= SKIP_WHEN_DOWN)
        })
    }

    /// Records a call that succeeded.
    pub fn note_ok(&self) {
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        if h.state != State::Up {
            let was = h.state;
            h.state = State::Up;
            h.cause = None;
            h.since = Instant::now();
            h.last_unreachable = None;
            h.last_warned = None;
            drop(h);
            let queued = self.counters.queued.load(Ordering::Relaxed);
            if was == State::Starting {
                tracing::info!(ipfs = %self.rpc.base(), queued, "IPFS reachable: mirroring blocks into it");
            } else {
                tracing::info!(ipfs = %self.rpc.base(), queued, "IPFS is back: catching up");
            }
        }
    }

    /// Records a failed call: the state moves to down or faulty, with a warning on the change
    /// and every [`REWARN`] while it lasts.
    pub fn note_error(&self, e: &RpcError) {
        let i = match e {
            RpcError::Unreachable(_) => 0,
            RpcError::Status { .. } => 1,
            RpcError::Garbage(_) | RpcError::WrongCid { .. } => 2,
            RpcError::Unsupported(_) => 3,
        };
        self.counters.errors[i].fetch_add(1, Ordering::Relaxed);
        if matches!(e, RpcError::Unsupported(_)) {
            return; // one block's codec, not IPFS's health
        }
        let state = match e {
            RpcError::Unreachable(_) | RpcError::Status { .. } => State::Down,
            _ => State::Faulty,
        };
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        let now = Instant::now();
        if e.is_unreachable() {
            h.last_unreachable = Some(now);
        }
        let cause = e.to_string();
        let changed = h.state != state || h.cause.as_deref() != Some(cause.as_str());
        if h.state != state {
            h.since = now;
        }
        h.state = state;
        h.cause = Some(cause);
        let warn = changed || h.last_warned.is_none_or(|t| t.elapsed() >= REWARN);
        if warn {
            h.last_warned = Some(now);
            let down_for = h.since.elapsed().as_secs();
            drop(h);
            let queued = self.counters.queued.load(Ordering::Relaxed);
            tracing::warn!(
                ipfs = %self.rpc.base(),
                state = state.as_str(),
                queued,
                down_for_secs = down_for,
                error = %e,
                "IPFS backend failing: blocks wait in the store's log and go when it answers again; publishing is not affected"
            );
        }
    }

    /// The backend's part of `/v1/status`.
    pub fn status(&self) -> Value {
        let (state, cause, secs) = match self.health.lock() {
            Ok(h) => (h.state, h.cause.clone(), h.since.elapsed().as_secs()),
            Err(_) => (State::Down, Some("state unavailable".into()), 0),
        };
        let c = &self.counters;
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        json!({
            "api": self.rpc.base(),
            "state": state,
            "error": cause,
            "state_secs": secs,
            "queued": load(&c.queued),
            "mirrored": load(&c.mirrored),
            "skipped": load(&c.skipped),
            "fetched": load(&c.fetched),
            "refused": load(&c.refused),
            "put_spelling": self.rpc.spelling().map(|s| s.as_str()),
        })
    }

    /// Appends the backend's series to a `/metrics` answer (docs/operations.md#metrics).
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut one = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "tidings_ipfs_up",
            "1 when the last call to the IPFS backend succeeded.",
            "gauge",
            u64::from(self.state() == State::Up),
        );
        one(
            "tidings_ipfs_mirror_queue",
            "Stored blocks not yet in IPFS (the mirror's backlog, kept in the store's log).",
            "gauge",
            load(&c.queued),
        );
        one(
            "tidings_ipfs_mirrored_blocks_total",
            "Blocks IPFS took with the same CID as ours.",
            "counter",
            load(&c.mirrored),
        );
        one(
            "tidings_ipfs_mirror_skipped_total",
            "Log entries retention removed before IPFS took them.",
            "counter",
            load(&c.skipped),
        );
        one(
            "tidings_ipfs_fetched_blocks_total",
            "Blocks fetched from IPFS that verified and were stored.",
            "counter",
            load(&c.fetched),
        );
        one(
            "tidings_ipfs_refused_blocks_total",
            "Blocks from IPFS that failed verification and were refused.",
            "counter",
            load(&c.refused),
        );
        let _ = writeln!(
            out,
            "# HELP tidings_ipfs_errors_total Failed calls to the IPFS backend, by reason.\n# TYPE tidings_ipfs_errors_total counter"
        );
        for (i, reason) in ["unreachable", "status", "garbage", "unsupported"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                out,
                "tidings_ipfs_errors_total{{reason=\"{reason}\"}} {}",
                load(&c.errors[i])
            );
        }
    }
}
