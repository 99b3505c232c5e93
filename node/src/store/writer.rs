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
        let outcome = counts.timed(Instant::now(), || commit(database, wal, &mut batch, counts));
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
/// one sequential write) before the transaction commits without redb's own fsync; when a
/// checkpoint is due the commit is a durable one instead, and the log is emptied after it.
/// Either way nothing is visible to readers, or answered, before it is on disk.
///
/// Always the log, whatever the load: a durable redb commit writes every page the batch
/// touched (about 30 4 KiB pages for the 5-9 operations of a batch at 5,000 events/s, each a
/// `pwrite` of its own) before its fsync, where the log's commit is one small append and one
/// fdatasync, and checkpoints ([`super::wal`]) are kept small enough not to stall the queue
/// for long. Making each batch a durable commit above 2,000 operations a second, as the writer
/// once did, gave three brokers at 5,000 events/s a p99 of 26-38 ms (median 30) where the log
/// gave 16-28 ms (median 24.5), in 9 rounds alternating the two.
fn commit(
    database: &VersionedDb,
    wal: &mut Wal,
    batch: &mut [Box<dyn Job>],
    counts: &Counts,
) -> Result<(), StoreError> {
    let durable = wal.checkpoint_due();
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
