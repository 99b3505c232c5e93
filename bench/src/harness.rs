//! The measurement every system goes through: subscribers record what arrives (by event id),
//! publishing lanes send the seeded events (as fast as accepted, or paced), and the deliveries
//! are compared with what was published: lost, duplicated, unwanted, latency, rates.
//!
//! A system only has to provide a [`Publisher`] and subscriber loops that feed a [`Recorder`]
//! until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::orders::{Order, PROBE_BASE, body_id, probe, useful};
use crate::stats::{Record, percentile};

/// After everything expected arrived, how long we keep listening for late duplicates.
const DUP_WINDOW: Duration = Duration::from_millis(300);
/// How long readiness probes may take to get through (a mesh forming, leases being placed).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Publishes one event; returns when the system's publish call returned: for systems that
/// acknowledge (JetStream, MQTT QoS 1, tidings), once the acknowledgement came back.
pub trait Publisher: Clone + Send + Sync + 'static {
    fn publish(&self, o: &Order) -> impl Future<Output = Result<()>> + Send;

    /// Pushes out whatever the client still buffers (called once after the last publish).
    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// One subscriber's record of deliveries, indexed by event id − `first`.
pub struct Recorder {
    first: u64,
    want: Arc<Vec<bool>>,
    /// The subscriber filters on content itself (the peers): it parses every body and drops
    /// what fails `price < 10 and order = "buy"`, as a real client of theirs would have to.
    client_filter: bool,
    base: Instant,
    /// Arrival in ns after `base`, plus one; 0 = not arrived.
    at: Vec<u64>,
    count: Vec<u32>,
    unwanted: usize,
    have: Arc<AtomicUsize>,
    probe: Arc<AtomicBool>,
}

impl Recorder {
    /// Records a delivered body (or a tidings event JSON carrying it), arrived at `now`.
    pub fn on_message(&mut self, bytes: &[u8], now: Instant) {
        let Some(id) = body_id(bytes) else { return };
        if id >= PROBE_BASE {
            self.probe.store(true, Ordering::Relaxed);
            return;
        }
        if self.client_filter && !useful(bytes) {
            return;
        }
        let Some(i) = id
            .checked_sub(self.first)
            .map(|i| i as usize)
            .filter(|i| *i < self.at.len())
        else {
            return;
        };
        if !self.want[i] {
            self.unwanted += 1;
            return;
        }
        self.count[i] += 1;
        if self.count[i] == 1 {
            self.at[i] = now.saturating_duration_since(self.base).as_nanos() as u64 + 1;
            self.have.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn arrival(&self, i: usize) -> Option<Instant> {
        (self.at[i] > 0).then(|| self.base + Duration::from_nanos(self.at[i] - 1))
    }
}

/// Runs a subscriber loop over a stream of message bytes until the stop signal (or the stream
/// ends); gives the recorder back.
pub async fn record_until_stopped<S, B>(
    mut rec: Recorder,
    mut stop: watch::Receiver<bool>,
    mut msgs: S,
) -> Recorder
where
    S: Stream<Item = B> + Unpin,
    B: AsRef<[u8]>,
{
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = msgs.next() => match m {
                Some(b) => rec.on_message(b.as_ref(), Instant::now()),
                None => break,
            },
        }
    }
    rec
}

/// The subscribers of one measurement: hand `recorders` (and `stop`) to the system's subscriber
/// loops, then [`measure`] with their join handles.
pub struct Subscribers {
    pub recorders: Vec<Recorder>,
    pub stop: watch::Receiver<bool>,
    stop_tx: watch::Sender<bool>,
    have: Arc<AtomicUsize>,
    probes: Vec<Arc<AtomicBool>>,
    /// Bytes received by the subscriber connections, when counted (see `proxy`).
    pub bytes: Option<Arc<AtomicU64>>,
    filtered: bool,
}

impl Subscribers {
    /// `n` subscribers for `events`; with `filtered` they want only the useful events (and the
    /// peers' subscribers, `client_filter`, filter them out themselves).
    pub fn new(
        events: &[Order],
        n: usize,
        filtered: bool,
        client_filter: bool,
        count_bytes: bool,
    ) -> Subscribers {
        let first = events.first().map_or(0, |o| o.id);
        let want: Arc<Vec<bool>> = Arc::new(events.iter().map(|o| !filtered || o.useful).collect());
        let (stop_tx, stop) = watch::channel(false);
        let have = Arc::new(AtomicUsize::new(0));
        let base = Instant::now();
        let mut probes = Vec::new();
        let recorders = (0..n)
            .map(|_| {
                let probe = Arc::new(AtomicBool::new(false));
                probes.push(probe.clone());
                Recorder {
                    first,
                    want: want.clone(),
                    client_filter: client_filter && filtered,
                    base,
                    at: vec![0; events.len()],
                    count: vec![0; events.len()],
                    unwanted: 0,
                    have: have.clone(),
                    probe,
                }
            })
            .collect();
        Subscribers {
            recorders,
            stop,
            stop_tx,
            have,
            probes,
            bytes: count_bytes.then(|| Arc::new(AtomicU64::new(0))),
            filtered,
        }
    }

    /// Takes the recorders out for the system's subscriber loops.
    pub fn take(&mut self) -> Vec<Recorder> {
        std::mem::take(&mut self.recorders)
    }
}

/// How to publish.
pub struct Plan {
    /// Publishing lanes, one call in flight each; lane `l` owns the topics with
    /// `topic_index % lanes == l`.
    pub lanes: usize,
    /// Paced: event `k` is due at `start + k / rate`; a lane that falls behind publishes at once.
    pub rate: Option<f64>,
    /// Publishing stops when this budget is spent, or the events run out.
    pub budget: Duration,
    /// How long after the last publish returned we still wait for missing deliveries.
    pub grace: Duration,
    /// Where to append each published event's timings as JSON lines ([`write_timings`]), to
    /// see where a latency figure comes from (the publish call or the delivery, early or late
    /// in the run); `None` writes nothing.
    pub timings: Option<std::path::PathBuf>,
}

/// The part of the record the caller knows.
pub struct Meta {
    pub system: String,
    pub scenario: String,
    pub run: u32,
    pub seed: u64,
    pub acked: bool,
    /// The server processes whose CPU time is measured ([`Record::server_cpu_s`]).
    pub servers: Vec<u32>,
}

/// Sends probes until every subscriber has seen one (the path is live).
async fn await_probes<P: Publisher>(p: &P, probes: &[Arc<AtomicBool>]) -> Result<()> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut k = 0u64;
    let mut last_err = None;
    while Instant::now() < deadline {
        // A publish may fail while the system is still forming; keep probing.
        if let Err(e) = p.publish(&probe(k)).await {
            last_err = Some(e);
        }
        let _ = p.flush().await;
        k += 1;
        let until = Instant::now() + Duration::from_millis(250);
        while Instant::now() < until {
            if probes.iter().all(|f| f.load(Ordering::Relaxed)) {
                // Let probes still in flight land before the measured events go.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    match last_err {
        Some(e) => bail!("no probe reached every subscriber within {PROBE_TIMEOUT:?}: {e:#}"),
        None => bail!("no probe reached every subscriber within {PROBE_TIMEOUT:?}"),
    }
}

/// One publish call that succeeded.
#[derive(Clone, Copy)]
struct Call {
    start: Instant,
    /// How long it took (for an acknowledged publish, until its ack).
    took: Duration,
}

/// What the publishing lanes did: per event index, its publish call if it succeeded.
struct Published {
    calls: Vec<Option<Call>>,
    errors: usize,
    first_error: Option<String>,
    t0: Instant,
    end: Instant,
}

async fn publish_all<P: Publisher>(
    p: &P,
    events: &Arc<Vec<Order>>,
    plan: &Plan,
) -> Result<Published> {
    let lanes = plan.lanes.max(1);
    let mut per_lane: Vec<Vec<usize>> = vec![Vec::new(); lanes];
    for (i, o) in events.iter().enumerate() {
        per_lane[o.topic_index % lanes].push(i);
    }
    let t0 = Instant::now();
    let deadline = t0 + plan.budget;
    let mut tasks = Vec::new();
    for lane in per_lane.into_iter().filter(|l| !l.is_empty()) {
        let p = p.clone();
        let events = events.clone();
        let rate = plan.rate;
        tasks.push(tokio::spawn(async move {
            let mut calls = Vec::with_capacity(lane.len());
            let mut errors = 0usize;
            let mut first_error = None;
            for i in lane {
                if let Some(r) = rate {
                    let due = t0 + Duration::from_secs_f64(i as f64 / r);
                    if due > deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let s = Instant::now();
                if s > deadline {
                    break;
                }
                match p.publish(&events[i]).await {
                    Ok(()) => calls.push((
                        i,
                        Call {
                            start: s,
                            took: s.elapsed(),
                        },
                    )),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (calls, errors, first_error)
        }));
    }
    let mut out = Published {
        calls: vec![None; events.len()],
        errors: 0,
        first_error: None,
        t0,
        end: t0,
    };
    for t in tasks {
        let (calls, errors, first_error) = t.await?;
        for (i, c) in calls {
            out.calls[i] = Some(c);
        }
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    p.flush().await?;
    out.end = Instant::now();
    Ok(out)
}

/// Probes, publishes `events` by `plan`, waits for the deliveries, stops the subscriber loops
/// (`handles`, fed by `subs`' recorders) and computes the record.
pub async fn measure<P: Publisher>(
    p: &P,
    events: &Arc<Vec<Order>>,
    plan: &Plan,
    subs: Subscribers,
    handles: Vec<JoinHandle<Option<Recorder>>>,
    meta: Meta,
) -> Result<Record> {
    await_probes(p, &subs.probes).await?;
    if let Some(b) = &subs.bytes {
        b.store(0, Ordering::Relaxed);
    }
    let cpu_before = servers_cpu(&meta.servers);
    let published = publish_all(p, events, plan).await?;
    if let Some(e) = &published.first_error {
        eprintln!(
            "  {} {}: {} publish calls failed, first: {e}",
            meta.system, meta.scenario, published.errors
        );
    }
    let n_subs = handles.len();
    let wanted_published = published
        .calls
        .iter()
        .zip(events.iter())
        .filter(|(s, o)| s.is_some() && (!subs.filtered || o.useful))
        .count();
    let expected = wanted_published * n_subs;
    let grace_end = Instant::now() + plan.grace;
    while subs.have.load(Ordering::Relaxed) < expected && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Read once everything arrived (or the grace ended), before the idle wait for duplicates.
    let server_cpu_s = match (cpu_before, servers_cpu(&meta.servers)) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    tokio::time::sleep(DUP_WINDOW).await;
    let bytes = subs.bytes.as_ref().map(|b| b.load(Ordering::Relaxed));
    let _ = subs.stop_tx.send(true);
    let mut recs = Vec::with_capacity(n_subs);
    for h in handles {
        recs.push(
            h.await?
                .context("a subscriber loop ended without its recorder")?,
        );
    }
    if let Some(path) = &plan.timings {
        write_timings(path, &meta, events, &published, &recs)
            .with_context(|| format!("writing event timings to {}", path.display()))?;
    }
    let mut r = summarise(events, &published, &recs, expected, bytes, plan, meta);
    r.server_cpu_s = server_cpu_s;
    Ok(r)
}

/// CPU seconds the server processes `pids` have used so far; `None` without any, or if one
/// cannot be read.
fn servers_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|p| crate::machine::cpu_seconds(Some(*p)))
        .sum()
}

/// One published event's timings, as [`write_timings`] writes them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EventTiming {
    /// The system measured (as in the results file).
    pub system: String,
    /// The scenario.
    pub scenario: String,
    /// The run (1-based).
    pub run: u32,
    /// The event's id.
    pub id: u64,
    /// When its publish call started, in seconds after the first publish.
    pub at_s: f64,
    /// How long the publish call took, µs (until the ack, for a system that acknowledges).
    pub publish_us: f64,
    /// Per subscriber: its first delivery after the publish call started, µs; `None` if it
    /// did not arrive (or the subscriber does not want it).
    pub delivery_us: Vec<Option<f64>>,
}

/// Appends one JSON line per published event ([`EventTiming`]) to `path`.
fn write_timings(
    path: &std::path::Path,
    meta: &Meta,
    events: &[Order],
    published: &Published,
    recs: &[Recorder],
) -> Result<()> {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut w = std::io::BufWriter::new(file);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (i, (call, o)) in published.calls.iter().zip(events).enumerate() {
        let Some(Call { start: s, took }) = call else {
            continue;
        };
        let line = EventTiming {
            system: meta.system.clone(),
            scenario: meta.scenario.clone(),
            run: meta.run,
            id: o.id,
            at_s: s.saturating_duration_since(published.t0).as_secs_f64(),
            publish_us: us(*took),
            delivery_us: recs
                .iter()
                .map(|r| r.arrival(i).map(|a| us(a.saturating_duration_since(*s))))
                .collect(),
        };
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

fn summarise(
    events: &[Order],
    published: &Published,
    recs: &[Recorder],
    expected: usize,
    bytes: Option<u64>,
    plan: &Plan,
    meta: Meta,
) -> Record {
    let mut lat = Vec::with_capacity(expected);
    let (mut delivered, mut dup, mut unwanted) = (0usize, 0usize, 0usize);
    let mut last = published.t0;
    for r in recs {
        unwanted += r.unwanted;
        for (i, c) in published.calls.iter().enumerate() {
            let Some(Call { start: s, .. }) = c else {
                continue;
            };
            dup += r.count[i].saturating_sub(1) as usize;
            if let Some(a) = r.arrival(i) {
                delivered += 1;
                lat.push(a.saturating_duration_since(*s).as_secs_f64() * 1e6);
                last = last.max(a);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    let n_pub = published.calls.iter().filter(|c| c.is_some()).count();
    let pub_span = published
        .end
        .saturating_duration_since(published.t0)
        .as_secs_f64()
        .max(1e-9);
    let span = last
        .saturating_duration_since(published.t0)
        .as_secs_f64()
        .max(1e-9);
    let body_bytes = if n_pub == 0 {
        0.0
    } else {
        events
            .iter()
            .zip(&published.calls)
            .filter(|(_, c)| c.is_some())
            .map(|(o, _)| o.body.len())
            .sum::<usize>() as f64
            / n_pub as f64
    };
    Record {
        bench: "compare".into(),
        system: meta.system,
        scenario: meta.scenario,
        run: meta.run,
        seed: meta.seed,
        subscribers: recs.len(),
        lanes: plan.lanes,
        offered_rate: plan.rate,
        published: n_pub,
        publish_errors: published.errors,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        dup,
        unwanted,
        published_per_s: n_pub as f64 / pub_span,
        delivered_per_s: delivered as f64 / span,
        p50_us: percentile(&lat, 50.0),
        p90_us: percentile(&lat, 90.0),
        p99_us: percentile(&lat, 99.0),
        max_us: lat.last().copied().unwrap_or(f64::NAN),
        bytes_received: bytes,
        bytes_per_useful: bytes.map(|b| b as f64 / delivered.max(1) as f64),
        body_bytes,
        acked: meta.acked,
        wall_s: span.max(pub_span),
        server_cpu_s: None,
        error: None,
    }
}
