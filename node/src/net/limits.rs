//! Per-peer inbound request rate limit: one token bucket per connected peer over all of
//! tidings' request-response protocols together, so no single peer can monopolise the node.
//!
//! Honest peers stay far below it: publishes, replicas and deliveries travel in batches (what
//! queued up while the last requests were out), so even an author publishing tens of thousands
//! of events a second sends a broker a few hundred requests a second at most.
//! A peer that keeps sending past it after being refused is flooding, and is penalised.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::penalty::Penalties;

/// Requests per second a peer may sustain unless configured otherwise; a peer may send twice
/// as many at once after a quiet spell.
pub const DEFAULT_RATE: u32 = 5_000;
/// Refused requests within [`STRIKE_WINDOW`] that make a peer a flooder.
pub const FLOOD_STRIKES: u32 = 1_000;
/// How long refusals count towards [`FLOOD_STRIKES`].
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);
/// Buckets kept before idle ones are dropped (a full bucket is the same as a new one).
const MAX_TRACKED: usize = 4096;

/// What to do with one inbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: serve it.
    Allow,
    /// Over the limit: refuse it. `first` is true for the first refusal of a strike window, the
    /// one worth a log line.
    Refuse {
        /// First refusal of this window.
        first: bool,
    },
    /// Over the limit again and again: the peer is flooding; refuse it and penalise it.
    Flood {
        /// Requests refused in the window.
        refused: u32,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals since `window` began.
    refused: u32,
    window: Instant,
}

/// Token buckets of the peers that sent requests, with their limits.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    strikes: u32,
    peers: HashMap<PeerId, Bucket>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::per_second(DEFAULT_RATE)
    }
}

impl RateLimit {
    /// `rate` requests/s sustained, bursts of twice that, a flooder after [`FLOOD_STRIKES`]
    /// refusals within [`STRIKE_WINDOW`].
    pub fn per_second(rate: u32) -> RateLimit {
        let rate = f64::from(rate.max(1));
        RateLimit::new(rate, 2.0 * rate, FLOOD_STRIKES)
    }

    /// `rate` requests/s sustained, `burst` at once, a flooder after `strikes` refusals within
    /// [`STRIKE_WINDOW`].
    pub fn new(rate: f64, burst: f64, strikes: u32) -> RateLimit {
        RateLimit {
            rate,
            burst: burst.max(1.0),
            strikes: strikes.max(1),
            peers: HashMap::new(),
        }
    }

    /// Requests per second a peer may sustain.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Counts one request from `peer` at `now` and says what to do with it.
    pub fn check(&mut self, peer: PeerId, now: Instant) -> Verdict {
        if self.peers.len() >= MAX_TRACKED && !self.peers.contains_key(&peer) {
            self.prune(now);
        }
        let b = self.peers.entry(peer).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            refused: 0,
            window: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if now.saturating_duration_since(b.window) > STRIKE_WINDOW {
            b.refused = 0;
            b.window = now;
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Allow;
        }
        b.refused = b.refused.saturating_add(1);
        if b.refused == 1 {
            b.window = now;
        }
        if b.refused >= self.strikes {
            Verdict::Flood { refused: b.refused }
        } else {
            Verdict::Refuse {
                first: b.refused == 1,
            }
        }
    }

    /// Drops the buckets that have filled up again and have no recent refusals: they are
    /// the same as new ones. (Kept across disconnections otherwise, so a flooder cannot refill
    /// its bucket by reconnecting.)
    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.peers.retain(|_, b| {
            let tokens = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate;
            tokens < burst || now.saturating_duration_since(b.window) <= STRIKE_WINDOW
        });
    }

    /// Peers with a bucket.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }
}

/// Whether a peer's request is served: shared by the swarm task (request-response protocols)
/// and the stream protocols ([`super::stream_rpc`]), so a peer has one rate limit over all of
/// them, and a penalty refuses it on every one.
#[derive(Debug, Clone)]
pub struct Admission {
    penalties: Penalties,
    limits: Arc<Mutex<RateLimit>>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The refusal to answer the request with.
    pub why: String,
    /// Set when the peer is flooding: the reason to penalise it for (the caller disconnects it).
    pub flood: Option<String>,
}

impl Admission {
    /// Admission against `penalties`, with `limits` shared by every protocol.
    pub fn new(penalties: Penalties, limits: RateLimit) -> Admission {
        Admission {
            penalties,
            limits: Arc::new(Mutex::new(limits)),
        }
    }

    /// Whether to serve a request from `peer` on `protocol` now. A penalised peer is refused; a
    /// peer over its rate limit is refused, and named a flooder once it keeps at it (it is
    /// penalised here; the caller closes its connections).
    pub fn admit(&self, peer: PeerId, protocol: &str) -> Result<(), Denied> {
        if self.penalties.is_penalised(&peer) {
            tracing::debug!(%peer, protocol, "request from a penalised peer refused");
            return Err(Denied {
                why: "refused: this peer is penalised for misbehaving".into(),
                flood: None,
            });
        }
        let (verdict, rate) = match self.limits.lock() {
            Ok(mut l) => (l.check(peer, Instant::now()), l.rate()),
            // A poisoned table (a panic elsewhere) limits nobody rather than everybody.
            Err(_) => return Ok(()),
        };
        let why = format!("rate limited: over {rate} requests/s");
        match verdict {
            Verdict::Allow => Ok(()),
            Verdict::Refuse { first } => {
                if first {
                    tracing::warn!(%peer, protocol, limit = %rate, "peer over its request rate limit: refusing its excess requests");
                }
                Err(Denied { why, flood: None })
            }
            Verdict::Flood { refused } => {
                let flood = format!("request flood: {refused} requests over the limit of {rate}/s");
                self.penalties.penalise(peer, &flood);
                Err(Denied {
                    why,
                    flood: Some(flood),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let mut l = RateLimit::new(100.0, 10.0, 5);
        let (p, t0) = (PeerId::random(), Instant::now());
        for _ in 0..10 {
            assert_eq!(l.check(p, t0), Verdict::Allow);
        }
        assert_eq!(l.check(p, t0), Verdict::Refuse { first: true });
        assert_eq!(l.check(p, t0), Verdict::Refuse { first: false });
        // 100/s: one more token every 10 ms.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(l.check(p, t1), Verdict::Allow);
        assert_eq!(l.check(p, t1), Verdict::Refuse { first: false });
        // Other peers have their own bucket.
        assert_eq!(l.check(PeerId::random(), t1), Verdict::Allow);
    }

    #[test]
    fn persistent_excess_is_a_flood_and_a_quiet_window_forgives() {
        let mut l = RateLimit::new(1.0, 1.0, 3);
        let (p, t0) = (PeerId::random(), Instant::now());
        assert_eq!(l.check(p, t0), Verdict::Allow);
        assert_eq!(l.check(p, t0), Verdict::Refuse { first: true });
        assert_eq!(l.check(p, t0), Verdict::Refuse { first: false });
        assert_eq!(l.check(p, t0), Verdict::Flood { refused: 3 });
        let later = t0 + STRIKE_WINDOW + Duration::from_secs(1);
        assert_eq!(l.check(p, later), Verdict::Allow);
        assert_eq!(l.check(p, later), Verdict::Refuse { first: true });
    }

    #[test]
    fn idle_buckets_are_pruned_when_the_table_is_full() {
        let mut l = RateLimit::new(1.0, 1.0, 3);
        let t0 = Instant::now();
        for _ in 0..MAX_TRACKED {
            assert_eq!(l.check(PeerId::random(), t0), Verdict::Allow);
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
        // Still empty and in their window: kept.
        l.check(PeerId::random(), t0);
        assert_eq!(l.tracked(), MAX_TRACKED + 1);
        // Refilled, window over: dropped.
        l.check(
            PeerId::random(),
            t0 + STRIKE_WINDOW + Duration::from_secs(2),
        );
        assert_eq!(l.tracked(), 1);
    }
}
