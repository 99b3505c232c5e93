//! Group commit: one thread owns the store's write transactions on the hot paths. Publishes,
//! replicas, deliveries, fetched blocks and durable acks queue to it; it takes whatever is
//! queued (up to [`MAX_OPS`] operations and [`MAX_BYTES`] of blocks), applies it all in one
//! transaction, makes it durable once (one fsync of the write-ahead log, [`super::wal`]), and
//! only then answers every caller. An idle node commits a lone operation at once; a busy one
//! pays one fsync for many.
//!
//! Nobody hears `Ok`, and no reader sees a write, before the log record that holds it is on
//! disk. Operations write only through [`Tables`]' methods (or note what else they change with
//! [`Tables::note_redo`]): what they change is what the log replays after a crash. A failed
//! commit (or a database error in any operation of the batch) fails every operation of the
//! batch, since the transaction that held them all is gone.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::tables::Tables;
use super::versioned::VersionedDb;
use super::wal::Wal;
use super::{StoreError, db};
use crate::histogram::Histogram;

/// Most operations in one transaction.
const MAX_OPS: usize = 4096;
/// Most block bytes in one transaction: a batch's commit must stay short, since every caller
/// in it waits for it.
const MAX_BYTES: usize = 16 << 20;

/// One queued operation.
pub(super) trait Job: Send {
    /// Block bytes it writes (for the batch bound).
    fn bytes(&self) -> usize;
    /// Applies it inside the batch's transaction. `Err` aborts the whole batch.
    fn apply(&mut self, txn: &WriteTransaction, t: &mut Tables<'_>) -> Result<(), StoreError>;
    /// Answers the caller: `committed` is the batch's outcome.
    fn done(self: Box<Self>, committed: Result<(), &str>);
}

/// A closure run in the writer's transaction, and where its result goes.
struct Op<R, F> {
    f: Option<F>,
    bytes: usize,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

/// Errors that concern only the operation that met them (bad input found before it wrote
/// anything); every other error leaves the transaction in doubt and fails the batch.
fn fatal(e: &StoreError) -> bool {
    !matches!(e, StoreError::Event(_) | StoreError::Conflict(_))
}

impl<R, F> Job for Op<R, F>
where
    R: Send,
    F: FnOnce(&WriteTransaction, &mut Tables<'_>) -> Result<R, StoreError> + Send,
{
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn apply(&mut self, txn: &WriteTransaction, t: &mut Tables<'_>) -> Result<(), StoreError> {
        let Some(f) = self.f.take() else {
            return Ok(());
        };
        let r = f(txn, t);
        if let Err(e) = &r
            && fatal(e)
        {
            let why = StoreError::Commit(e.to_string());
            self.result = Some(r);
            return Err(why);
        }
        self.result = Some(r);
        Ok(())
    }

    fn done(self: Box<Self>, committed: Result<(), &str>) {
        let out = match (self.result, committed) {
            // This operation's own error (the one that failed the batch, or its own bad input).
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(r)), Ok(())) => Ok(r),
            (_, Err(why)) => Err(StoreError::Commit(why.to_string())),
            (None, Ok(())) => Err(StoreError::Commit("operation was not applied".into())),
        };
        let _ = self.reply.send(out);
    }
}

/// The queue in front of the writer thread. Dropping it lets the thread finish what is
/// queued and waits for it, so the database is closed when the store is (a reopen right after
/// finds it free).
#[derive(Debug)]
pub(super) struct Writer {
    tx: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counts: Arc<Counts>,
    /// Dropping it stops the flusher ([`start_flusher`]).
    flush_stop: Option<mpsc::Sender<()>>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// Above this many operations a second the writer commits each batch durably in redb (one
/// fsync, shared by the many operations a busy queue holds) instead of through the log. Below
/// it the log's small sequential fsync answers sooner; above it the log would buy little, and
/// a checkpoint (a durable redb commit after many that were not) stalls the queue for tens of
/// ms, which at high rates reaches the p99.
const LOG_MAX_RATE: f64 = 2_000.0;

/// A window whose durable commits held this many operations each on average means the writer
/// no longer keeps up: operations pile up while it waits for the fsync of every page a batch
/// touched. It then goes back to the log, whose commit is one small sequential fsync with
/// the store's pages written back in the background ([`start_flusher`]): that takes about a
/// quarter more a second, and the queue's own wait already outweighs a checkpoint's stall. (One
/// node, 256 publishes in flight: durable commits average 47–82 operations; 5,000/s offered:
/// 3–5; on the log, 24–78 and 2–3.)
const SATURATED_BATCH: f64 = 32.0;

/// A window on the log whose batches average fewer operations than this means the queue has
/// drained: back to durable commits, so that a checkpoint's stall stays out of the tail. Far
/// below [`SATURATED_BATCH`], because the log's cheaper commit itself makes batches smaller.
const DRAINED_BATCH: f64 = 8.0;

/// How long the writer's rate is measured over: short, so a burst's end (or start) changes
/// the way it commits within a fraction of a second.
const LOAD_WINDOW: Duration = Duration::from_millis(250);

/// The writer's recent load, measured over windows of [`LOAD_WINDOW`], and the way of
/// committing it calls for.
struct Load {
    since: Instant,
    ops: u64,
    batches: u64,
    /// Whether the last window was above [`LOG_MAX_RATE`].
    busy: bool,
    /// Whether the writer is saturated (entered at [`SATURATED_BATCH`], left at
    /// [`DRAINED_BATCH`]); only a busy writer is.
    saturated: bool,
}

impl Load {
    fn new(now: Instant) -> Load {
        Load {
            since: now,
            ops: 0,
            batches: 0,
            busy: false,
            saturated: false,
        }
    }

    /// Counts a batch of `ops` operations taken at `now`; at a window's end, decides how the
    /// next batches commit.
    fn note(&mut self, ops: usize, now: Instant) {
        self.ops += ops as u64;
        self.batches += 1;
        let took = now.saturating_duration_since(self.since);
        if took < LOAD_WINDOW {
            return;
        }
        let rate = self.ops as f64 / took.as_secs_f64();
        let batch = self.ops as f64 / self.batches as f64;
        // Hysteresis: once saturated, it takes a drained queue to leave.
        let threshold = if self.saturated {
            DRAINED_BATCH
        } else {
            SATURATED_BATCH
        };
        let saturated = rate > LOG_MAX_RATE && batch >= threshold;
        let changed = saturated != self.saturated;
        self.busy = rate > LOG_MAX_RATE;
        self.saturated = saturated;
        if changed {
            tracing::debug!(
                rate = rate as u64,
                batch,
                saturated,
                "store: the writer commits through the {}",
                if self.durable() {
                    "store"
                } else {
                    "write-ahead log"
                }
            );
        }
        self.ops = 0;
        self.batches = 0;
        self.since = now;
    }

    /// Whether the next batch is a durable redb commit (else it goes through the log).
    fn durable(&self) -> bool {
        self.busy && !self.saturated
    }
}

/// How often the flusher starts the kernel writing the store file back.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// The writer's commits skip redb's fsync (the log makes them durable), so the store file's
/// dirty pages would pile up in the page cache until a checkpoint's fsync writes them all
/// while every caller of that batch waits. This thread starts their writeback every
/// [`FLUSH_EVERY`] without waiting for it, so a checkpoint finds little left to write.
fn start_flusher(
    path: &Path,
    counts: Arc<Counts>,
    stop: mpsc::Receiver<()>,
) -> Option<std::thread::JoinHandle<()>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "store: no background writeback (checkpoints take longer)");
            return None;
        }
    };
    std::thread::Builder::new()
        .name("tidings-store-flush".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(FLUSH_EVERY) {
                // Durable commits write their own pages back; only the log's leave them.
                if counts.logging.load(Ordering::Relaxed) {
                    write_back(&file);
                }
            }
        })
        .ok()
}

#[cfg(target_os = "linux")]
fn write_back(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; SYNC_FILE_RANGE_WRITE only queues writeback of the
    // file's dirty pages (offset 0, length 0: all of it) and touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn write_back(_file: &std::fs::File) {}

/// What the writer has done since the store opened.
#[derive(Debug, Default)]
struct Counts {
    commits: AtomicU64,
    operations: AtomicU64,
    checkpoints: AtomicU64,
    times: Arc<CommitTimes>,
    /// Whether the log holds records (commits since the last durable one skipped redb's fsync).
    logging: AtomicBool,
}

/// How long the writer's commits take. A write waits for the commit before its own (the
/// writer takes nothing new meanwhile) and then for its own: these are where a store's share
/// of a publish's latency comes from, and a checkpoint is a stall of every write behind it.
#[derive(Debug, Default)]
pub struct CommitTimes {
    /// Every group commit: applying its writes, the fsync that makes them durable and the
    /// transaction's commit.
    pub commit: Histogram,
    /// The durable redb commits among them that emptied the write-ahead log (and the last one
    /// when the store closes).
    pub checkpoint: Histogram,
}

/// Group commits since the store opened: how many, and how many operations they held (their
/// ratio is how much one fsync is shared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommitStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Operations (publishes, inserts, acks) they held.
    pub operations: u64,
    /// Durable redb commits that emptied the write-ahead log.
    pub checkpoints: u64,
}

impl Counts {
    /// Runs `commit`, which began at `began`, and records how long it took: as a checkpoint
    /// too if it made one.
    fn timed<R>(&self, began: Instant, commit: impl FnOnce() -> R) -> R {
        let checkpoints = self.checkpoints.load(Ordering::Relaxed);
        let outcome = commit();
        let took = began.elapsed();
        self.times.commit.observe(took);
        if self.checkpoints.load(Ordering::Relaxed) > checkpoints {
            self.times.checkpoint.observe(took);
        }
        outcome
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.flush_stop = None;
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Starts the writer thread for `db`, logging to `wal` (already replayed and emptied). It
    /// ends when the last [`Writer`] handle is dropped.
    pub(super) fn start(
        db: Arc<VersionedDb>,
        path: &Path,
        mut wal: Wal,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let thread = std::thread::Builder::new()
            .name("tidings-store-writer".into())
            .spawn(move || run(&db, &mut wal, &rx, &c))
            .map_err(|e| StoreError::Commit(format!("cannot start the store writer: {e}")))?;
        let (flush_stop, stop) = mpsc::channel();
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            flusher: start_flusher(path, counts.clone(), stop),
            counts,
            flush_stop: Some(flush_stop),
        })
    }

    /// How long its commits took (the figures go on after the store closes).
    pub(super) fn times(&self) -> Arc<CommitTimes> {
        self.counts.times.clone()
    }

    /// Group commits so far.
    pub(super) fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counts.commits.load(Ordering::Relaxed),
            operations: self.counts.operations.load(Ordering::Relaxed),
            checkpoints: self.counts.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` in the next group transaction and returns its result once that transaction
    /// committed. `bytes` is what it writes, for the batch bound.
    pub(super) async fn run<R, F>(&self, bytes: usize, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction, &mut Tables<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        answered(self.queue(bytes, f)?).await
    }

    /// [`Writer::run`] for a thread that may block (not an async task).
    pub(super) fn run_blocking<R, F>(&self, bytes: usize, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction, &mut Tables<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.queue(bytes, f)?
            .blocking_recv()
            .map_err(|_| stopped())?
    }

    /// Queues `f` for the next group transaction now; the receiver gets its result once that
    /// transaction committed ([`answered`] turns it into that result).
    pub(super) fn queue<R, F>(
        &self,
        bytes: usize,
        f: F,
    ) -> Result<oneshot::Receiver<Result<R, StoreError>>, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction, &mut Tables<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Op {
            f: Some(f),
            bytes,
            result: None,
            reply,
        };
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(Box::new(op))
            .map_err(|_| stopped())?;
        Ok(answer)
    }
}

/// The result a [`Writer::queue`]d operation's receiver gets.
pub(super) async fn answered<R>(
    answer: oneshot::Receiver<Result<R, StoreError>>,
) -> Result<R, StoreError> {
    answer.await.map_err(|_| stopped())?
}

fn stopped() -> StoreError {
    StoreError::Commit("the store writer has stopped".into())
}

/// The writer thread: takes what is queued, commits it as one transaction, answers everyone.
/// When the queue closes it makes a last durable commit, so a clean restart replays nothing.
fn run(database: &VersionedDb, wal: &mut Wal, rx: &mpsc::Receiver<Box<dyn Job>>, counts: &Counts) {
    let mut load = Load::new(Instant::now());
    while let Ok(first) = rx.recv() {
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_OPS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.bytes();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        load.note(batch.len(), now);
        let outcome = counts.timed(now, || {
            commit(database, wal, load.durable(), &mut batch, counts)
        });
        counts.commits.fetch_add(1, Ordering::Relaxed);
        counts
            .operations
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, operations = batch.len(), "store: a group commit failed; nothing of it was acknowledged");
        }
        let why = outcome.as_ref().map_err(|e| e.to_string());
        for job in batch {
            job.done(why.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
    if !wal.is_empty()
        && let Err(e) = counts.timed(Instant::now(), || checkpoint(database, wal, counts))
    {
        tracing::warn!(error = %e, "store: the last checkpoint failed; the write-ahead log is replayed at the next start");
    }
}

/// Applies `batch` in one transaction. Its changes go to the write-ahead log (one fsync of
/// one sequential write) before the transaction commits without redb's own fsync; when the
/// writer's load calls for `durable` commits ([`Load`]) or a checkpoint is due the commit is a
/// durable one instead, and the log is emptied after it.
/// Either way nothing is visible to readers, or answered, before it is on disk.
fn commit(
    database: &VersionedDb,
    wal: &mut Wal,
    durable: bool,
    batch: &mut [Box<dyn Job>],
    counts: &Counts,
) -> Result<(), StoreError> {
    let durable = durable || wal.checkpoint_due();
    let mut txn = database.begin_write().map_err(db)?;
    if !durable {
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Commit(e.to_string()))?;
    }
    let redo = Tables::within(&txn, |t| {
        // A durable commit needs no log record: keep no copy of what it writes.
        if !durable {
            t.record_redo();
        }
        for job in batch.iter_mut() {
            job.apply(&txn, t)?;
        }
        Ok(t.take_redo())
    })?;
    if !durable && !redo.is_empty() {
        wal.append(&redo)
            .map_err(|e| StoreError::Commit(format!("write-ahead log: {e}")))?;
        counts.logging.store(true, Ordering::Relaxed);
    }
    txn.commit().map_err(db)?;
    if durable {
        emptied(wal, counts);
    }
    Ok(())
}

/// A durable commit of nothing new: carries every earlier commit to disk, then empties the log.
fn checkpoint(database: &VersionedDb, wal: &mut Wal, counts: &Counts) -> Result<(), StoreError> {
    database.begin_write().map_err(db)?.commit().map_err(db)?;
    emptied(wal, counts);
    Ok(())
}

/// Empties the log after a durable commit. If that fails the log keeps records the store
/// already holds, which replay skips: worth a warning, not a failed commit.
fn emptied(wal: &mut Wal, counts: &Counts) {
    if wal.is_empty() {
        return;
    }
    counts.checkpoints.fetch_add(1, Ordering::Relaxed);
    counts.logging.store(false, Ordering::Relaxed);
    if let Err(e) = wal.reset() {
        tracing::warn!(error = %e, "store: cannot empty the write-ahead log after a checkpoint");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `load` one window of `batches` batches of `per_batch` operations each, spread
    /// over exactly [`LOAD_WINDOW`] from `start`; returns the window's end.
    fn window(load: &mut Load, start: Instant, ops_per_s: f64, per_batch: usize) -> Instant {
        let batches = ((ops_per_s * LOAD_WINDOW.as_secs_f64()) / per_batch as f64).max(1.0) as u32;
        let step = LOAD_WINDOW / batches;
        for k in 1..batches {
            load.note(per_batch, start + step * k);
        }
        // The last one closes the window (the steps' rounding would leave it a hair short).
        load.note(per_batch, start + LOAD_WINDOW);
        start + LOAD_WINDOW
    }

    #[test]
    fn quiet_writer_logs_busy_one_commits_durably_saturated_one_logs_again() {
        let t0 = Instant::now();
        let mut load = Load::new(t0);
        assert!(!load.durable(), "a new writer commits through the log");
        // 500/s in batches of 1: quiet, the log's small fsync answers soonest.
        let t = window(&mut load, t0, 500.0, 1);
        assert!(!load.durable());
        // 5,000/s in batches of 4 (what 5,000/s offered to one node gives): keeps up, durable.
        let t = window(&mut load, t, 5_000.0, 4);
        assert!(load.durable());
        // 12,000/s in batches of 60 (256 publishes in flight): saturated, back to the log.
        let t = window(&mut load, t, 12_000.0, 60);
        assert!(
            !load.durable(),
            "a saturated writer commits through the log"
        );
        // On the log the batches shrink (24 here) but the queue is still full: stay.
        let t = window(&mut load, t, 18_000.0, 24);
        assert!(
            !load.durable(),
            "smaller batches on the log alone do not leave saturation"
        );
        // The load falls to 5,000/s: batches of 2 on the log, the queue drained.
        let t = window(&mut load, t, 5_000.0, 2);
        assert!(
            load.durable(),
            "a drained queue goes back to durable commits"
        );
        // And a quiet writer logs again.
        window(&mut load, t, 500.0, 1);
        assert!(!load.durable());
    }

    #[test]
    fn a_busy_writer_below_the_saturation_batch_stays_durable() {
        let t0 = Instant::now();
        let mut load = Load::new(t0);
        let mut t = t0;
        for _ in 0..8 {
            t = window(&mut load, t, 8_000.0, (SATURATED_BATCH as usize) - 1);
            assert!(load.durable());
        }
        t = window(&mut load, t, 8_000.0, SATURATED_BATCH as usize);
        assert!(!load.durable());
        // A quiet window leaves saturation whatever its batches.
        window(&mut load, t, 1_000.0, 10);
        assert!(!load.durable());
        assert!(!load.saturated);
    }
}
