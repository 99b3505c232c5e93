//! Counters exposed at `GET /metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreStats;

/// Process-wide counters. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events published through this node's API and stored.
    pub published: AtomicU64,
    /// Publish requests refused or failed.
    pub publish_failed: AtomicU64,
    /// Blocks stored by CAR import.
    pub imported_blocks: AtomicU64,
    /// CAR imports refused as a whole.
    pub import_failed: AtomicU64,
    /// HTTP responses with a 4xx status.
    pub http_client_errors: AtomicU64,
    /// HTTP responses with a 5xx status.
    pub http_server_errors: AtomicU64,
    /// Gaps in delivered streams that this node repaired from the DAG.
    pub gaps_repaired: AtomicU64,
    /// Events recovered by gap repair and handed to local subscribers' filters.
    pub events_repaired: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every counter, plus the store gauges, as Prometheus text.
    pub fn render(&self, store: Option<StoreStats>) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            "tidings_published_events_total",
            "Events published through this node and stored.",
            &self.published,
        );
        counter(
            "tidings_publish_failures_total",
            "Publish requests refused or failed.",
            &self.publish_failed,
        );
        counter(
            "tidings_imported_blocks_total",
            "Blocks stored by CAR import.",
            &self.imported_blocks,
        );
        counter(
            "tidings_import_failures_total",
            "CAR imports refused as a whole.",
            &self.import_failed,
        );
        counter(
            "tidings_http_client_errors_total",
            "HTTP responses with a 4xx status.",
            &self.http_client_errors,
        );
        counter(
            "tidings_http_server_errors_total",
            "HTTP responses with a 5xx status.",
            &self.http_server_errors,
        );
        counter(
            "tidings_gaps_repaired_total",
            "Gaps in delivered streams repaired from the DAG.",
            &self.gaps_repaired,
        );
        counter(
            "tidings_events_repaired_total",
            "Events recovered by gap repair.",
            &self.events_repaired,
        );
        if let Some(s) = store {
            let _ = writeln!(
                out,
                "# HELP tidings_store_blocks Blocks held in the store.\n# TYPE tidings_store_blocks gauge\ntidings_store_blocks {}",
                s.blocks
            );
            let _ = writeln!(
                out,
                "# HELP tidings_store_bytes Bytes of blocks held in the store.\n# TYPE tidings_store_bytes gauge\ntidings_store_bytes {}",
                s.bytes
            );
        }
        out
    }
}
