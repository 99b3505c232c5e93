//! `POST /v1/fetch`: fetch and verify history from other nodes, with progress.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tidings_ipld_schema::Cid;
use tokio::sync::watch;

use super::{ApiError, AppState};
use crate::history::{self, FetchOptions, Progress};

/// Body of `POST /v1/fetch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchBody {
    /// Where to start.
    cid: String,
    /// Where to stop (held already, or not wanted).
    #[serde(default)]
    until: Vec<String>,
    /// Verify without storing (benchmarks; only in builds with the `test-faults` feature).
    #[cfg(feature = "test-faults")]
    #[serde(default)]
    verify_only: bool,
    /// One request per block: the benchmarks' baseline (only with `test-faults`).
    #[cfg(feature = "test-faults")]
    #[serde(default)]
    per_block: bool,
}

/// How often a progress line goes out.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

fn parse(s: &str) -> Result<Cid, ApiError> {
    s.parse::<Cid>()
        .map_err(|e| ApiError::bad_request(format!("invalid CID {s:?}: {e}")))
}

/// `POST /v1/fetch {"cid", "until": [..]}` → newline-delimited JSON: `{"progress": {...}}`
/// lines while it runs, then `{"done": summary}` (or `{"error": "..."}`).
pub(super) async fn fetch(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body?;
    let req: FetchBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            r#"request body must be {{"cid": "...", "until": ["..."]}}: {e}"#
        ))
    })?;
    let want = parse(&req.cid)?;
    let until = req
        .until
        .iter()
        .map(|s| parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = FetchOptions {
        want: vec![want],
        until,
        #[cfg(feature = "test-faults")]
        verify_only: req.verify_only,
        #[cfg(feature = "test-faults")]
        per_block: req.per_block,
        ..FetchOptions::default()
    };
    let (tx, mut rx) = watch::channel(Progress::default());
    let router = st.router.clone();
    let job =
        tokio::spawn(async move { history::fetch(router.net(), router.store(), opts, tx).await });
    let (lines_tx, lines_rx) = tokio::sync::mpsc::channel::<String>(4);
    tokio::spawn(async move {
        let mut job = job;
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        let done = loop {
            tokio::select! {
                r = &mut job => break r,
                _ = tick.tick() => {
                    let p = *rx.borrow_and_update();
                    if lines_tx.send(json!({"progress": p}).to_string()).await.is_err() {
                        // The client left; the fetch still completes and keeps what it got.
                    }
                }
            }
        };
        let line = match done {
            Ok(Ok(summary)) => {
                tracing::info!(
                    blocks = summary.blocks,
                    verified = summary.verified,
                    seconds = summary.seconds,
                    complete = summary.complete,
                    "fetch finished"
                );
                json!({ "done": summary })
            }
            Ok(Err(e)) => json!({ "error": e.to_string() }),
            Err(e) => json!({ "error": format!("fetch task failed: {e}") }),
        };
        let _ = lines_tx.send(line.to_string()).await;
    });
    let stream = futures::stream::unfold(lines_rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, Infallible>(format!("{line}\n")), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
