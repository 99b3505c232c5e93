//! Group commit: one thread owns the store's write transactions on the hot paths. Publishes,
//! replicas, deliveries, fetched blocks and durable acks queue to it; it takes whatever is
//! queued (up to [`MAX_OPS`] operations and [`MAX_BYTES`] of blocks), applies it all in one
//! transaction, commits once (one fsync), and only then answers every caller. An idle node
//! commits a lone operation at once; a busy one pays one fsync for many.
//!
//! Durability is unchanged: nobody hears `Ok` before the commit that holds their write
//! returned. A failed commit (or a database error in any operation of the batch) fails every
//! operation of the batch, since the transaction that held them all is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use super::tables::Tables;
use super::{StoreError, db};

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
}

/// What the writer has done since the store opened.
#[derive(Debug, Default)]
struct Counts {
    commits: AtomicU64,
    operations: AtomicU64,
}

/// Group commits since the store opened: how many, and how many operations they held (their
/// ratio is how much one fsync is shared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommitStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Operations (publishes, inserts, acks) they held.
    pub operations: u64,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Starts the writer thread for `db`. It ends when the last [`Writer`] handle is dropped.
    pub(super) fn start(db: Arc<Database>) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let thread = std::thread::Builder::new()
            .name("tidings-store-writer".into())
            .spawn(move || run(&db, &rx, &c))
            .map_err(|e| StoreError::Commit(format!("cannot start the store writer: {e}")))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            counts,
        })
    }

    /// Group commits so far.
    pub(super) fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counts.commits.load(Ordering::Relaxed),
            operations: self.counts.operations.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` in the next group transaction and returns its result once that transaction
    /// committed. `bytes` is what it writes, for the batch bound.
    pub(super) async fn run<R, F>(&self, bytes: usize, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction, &mut Tables<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        self.queue(bytes, f)?.await.map_err(|_| stopped())?
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

    fn queue<R, F>(
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

fn stopped() -> StoreError {
    StoreError::Commit("the store writer has stopped".into())
}

/// The writer thread: takes what is queued, commits it as one transaction, answers everyone.
fn run(database: &Database, rx: &mpsc::Receiver<Box<dyn Job>>, counts: &Counts) {
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
        let outcome = commit(database, &mut batch);
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
}

fn commit(database: &Database, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let txn = database.begin_write().map_err(db)?;
    {
        let mut t = Tables::open(&txn)?;
        for job in batch.iter_mut() {
            job.apply(&txn, &mut t)?;
        }
    }
    txn.commit().map_err(db)
}
