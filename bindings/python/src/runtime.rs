//! The clients' runtime, and waiting on it from Python with the GIL released.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors;

/// How often a wait wakes to let Python run its signal handlers (Ctrl-C raises promptly).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// One runtime for every client in the process (embedded nodes have their own): two worker
/// threads named `tidings-client`, which carry HTTP requests and subscriptions' sockets.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tidings-client")
        .enable_all()
        .build()
        .map_err(|e| errors::error(format!("cannot start the client runtime: {e}")))?;
    // Another thread may have won the race; its runtime is used and this one dropped.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `fut` on the client runtime to completion with the GIL released, so other Python
/// threads run meanwhile. A signal handler that raises (Ctrl-C) ends the wait with its
/// exception; `fut` is then dropped, so it must be safe to cancel.
pub(crate) fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    match wait_for(py, fut, None)? {
        Some(v) => Ok(v),
        None => Err(errors::error("wait ended without a result".to_string())),
    }
}

/// [`wait`] for at most `limit`: `None` when it elapsed first.
pub(crate) fn wait_for<F>(
    py: Python<'_>,
    fut: F,
    limit: Option<Duration>,
) -> PyResult<Option<F::Output>>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let deadline = limit.map(|l| std::time::Instant::now() + l);
    let mut fut = Box::pin(fut);
    loop {
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                left.min(SIGNAL_CHECK)
            }
            None => SIGNAL_CHECK,
        };
        // The timer is made inside block_on: it needs the runtime's context.
        let polled =
            py.detach(|| rt.block_on(async { tokio::time::timeout(slice, &mut fut).await }));
        match polled {
            Ok(v) => return Ok(Some(v)),
            Err(_) => py.check_signals()?,
        }
    }
}
