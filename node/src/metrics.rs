//! Counters, gauges and histograms exposed at `GET /metrics` in the Prometheus text format.
//! Every series is described in `docs/operations.md`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::histogram::Histogram;
use crate::store::StoreStats;

/// Process-wide counters. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events published through this node's API and stored.
    pub published: AtomicU64,
    /// Publish requests refused or failed, at the API or in the router.
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
    /// Streams held behind a gap the first repair could not fill (see `pubsub::held`).
    pub streams_held: AtomicU64,
    /// Held streams that moved past a gap still not repaired when the hold ran out.
    pub streams_held_given_up: AtomicU64,
    /// Events delivered to subscriber nodes as a primary (acknowledged by them).
    pub delivered_to_nodes: AtomicU64,
    /// Events a subscriber node was not reached with after every attempt.
    pub deliveries_given_up: AtomicU64,
    /// Events in delivery batches a subscriber node refused.
    pub deliveries_refused: AtomicU64,
    /// Events other nodes published through this node as primary, held by a majority.
    pub primary_stored: AtomicU64,
    /// Events other nodes published through this node as primary that it refused.
    pub primary_refused: AtomicU64,
    /// Event blocks stored here as a replica for a primary.
    pub replicas_stored: AtomicU64,
    /// Delivered events this node already held durably, taken without a store write.
    pub deliveries_held: AtomicU64,
    /// Events pulled by replica sync.
    pub sync_events: AtomicU64,
    /// Holes in authors' chains filled by replica sync.
    pub sync_holes: AtomicU64,
    /// Hole fetches no member could answer (each is asked for again later).
    pub sync_hole_misses: AtomicU64,
    /// Holes dropped unfetched: in the pruned past of their stream (older than `--retain-age`,
    /// or pruned by every member), so retention has removed them.
    pub sync_holes_pruned: AtomicU64,
    /// Replica sync rounds finished.
    pub sync_rounds: AtomicU64,
    /// Durable records taken in by replica sync.
    pub sync_durables: AtomicU64,
    /// Open API subscriptions by transport and kind.
    pub subscribers: [[AtomicU64; 3]; 2],
    /// From a publish request to its acknowledgement.
    pub publish_ack: Histogram,
    /// From signing an event published here to its durable copy in this node's store: the
    /// first part of [`Metrics::publish_ack`].
    pub publish_commit: Histogram,
    /// As a topic's primary, from taking an event to a majority of its set holding it
    /// durably (this node's copy and the replicas'): the part of an acknowledgement spent here.
    pub primary_store: Histogram,
    /// From matching an event here to writing it to a subscriber's connection.
    pub match_deliver: Histogram,
}

/// How an API subscriber is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    WebSocket = 0,
    /// Server-Sent Events.
    Sse = 1,
}

/// What an API subscription asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    /// Live events only.
    Live = 0,
    /// Stored events from a time first (`since`), then live ones.
    Replay = 1,
    /// A durable subscription.
    Durable = 2,
}

/// Counts one open subscription in `tidings_subscribers` until dropped.
pub struct SubscriberGauge<'a> {
    cell: &'a AtomicU64,
}

impl Drop for SubscriberGauge<'_> {
    fn drop(&mut self) {
        self.cell.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What `/metrics` reads from the rest of the node when scraped.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Block store size, if it could be read.
    pub store: Option<StoreStats>,
    /// Open libp2p connections.
    pub peers: usize,
    /// Brokers known.
    pub brokers: usize,
    /// Roots served as a rendezvous member.
    pub roots: usize,
    /// Subscription leases held as a rendezvous member.
    pub leases: usize,
    /// Events handed to local API subscribers.
    pub delivered_local: u64,
    /// Local subscribers cut off as too slow.
    pub too_slow: u64,
    /// The store's group commits.
    pub commits: crate::store::CommitStats,
    /// How long they take.
    pub commit_times: std::sync::Arc<crate::store::CommitTimes>,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// API subscribers whose connection is open, of every transport and kind.
    pub fn open_subscribers(&self) -> u64 {
        self.subscribers
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts an open subscription until the returned guard is dropped.
    pub fn subscriber(&self, transport: Transport, kind: SubKind) -> SubscriberGauge<'_> {
        let cell = &self.subscribers[transport as usize][kind as usize];
        cell.fetch_add(1, Ordering::Relaxed);
        SubscriberGauge { cell }
    }

    /// Renders every series as Prometheus text.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::new();
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let head = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let single = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            head(out, name, help, kind);
            let _ = writeln!(out, "{name} {v}");
        };
        let counters: [(&str, &str, &AtomicU64); 18] = [
            (
                "tidings_published_events_total",
                "Events published through this node's API and acknowledged.",
                &self.published,
            ),
            (
                "tidings_publish_failures_total",
                "Publish requests refused or failed, whatever the reason.",
                &self.publish_failed,
            ),
            (
                "tidings_imported_blocks_total",
                "Blocks stored by CAR import.",
                &self.imported_blocks,
            ),
            (
                "tidings_import_failures_total",
                "CAR imports refused as a whole.",
                &self.import_failed,
            ),
            (
                "tidings_http_client_errors_total",
                "HTTP responses with a 4xx status.",
                &self.http_client_errors,
            ),
            (
                "tidings_http_server_errors_total",
                "HTTP responses with a 5xx status.",
                &self.http_server_errors,
            ),
            (
                "tidings_gaps_repaired_total",
                "Gaps in delivered streams repaired from the DAG.",
                &self.gaps_repaired,
            ),
            (
                "tidings_events_repaired_total",
                "Events recovered by gap repair.",
                &self.events_repaired,
            ),
            (
                "tidings_streams_held_total",
                "Streams whose later events were held behind a gap the first repair could not fill.",
                &self.streams_held,
            ),
            (
                "tidings_streams_held_given_up_total",
                "Held streams that moved past a gap still unrepaired when the hold ran out.",
                &self.streams_held_given_up,
            ),
            (
                "tidings_replicas_stored_total",
                "Event blocks stored here as a replica for a primary.",
                &self.replicas_stored,
            ),
            (
                "tidings_deliveries_already_held_total",
                "Delivered events this node already held durably (its own, or replicas it stores for their primary), taken without a store write.",
                &self.deliveries_held,
            ),
            (
                "tidings_replica_sync_events_total",
                "Events pulled by replica sync from other members of a rendezvous set.",
                &self.sync_events,
            ),
            (
                "tidings_replica_sync_holes_filled_total",
                "Holes in authors' chains filled by replica sync.",
                &self.sync_holes,
            ),
            (
                "tidings_replica_sync_hole_misses_total",
                "Fetches of a hole in an author's chain that no member could answer (asked again later).",
                &self.sync_hole_misses,
            ),
            (
                "tidings_replica_sync_holes_pruned_total",
                "Holes in authors' chains dropped unfetched: in their stream's pruned past.",
                &self.sync_holes_pruned,
            ),
            (
                "tidings_replica_sync_rounds_total",
                "Replica sync rounds finished.",
                &self.sync_rounds,
            ),
            (
                "tidings_replica_sync_durables_total",
                "Durable subscription records taken in from other members.",
                &self.sync_durables,
            ),
        ];
        for (name, help, v) in counters {
            single(&mut out, name, help, "counter", load(v));
        }
        head(
            &mut out,
            "tidings_deliveries_total",
            "Events delivered: to this node's API subscribers (local), to subscriber nodes as primary (node).",
            "counter",
        );
        let _ = writeln!(
            out,
            "tidings_deliveries_total{{to=\"local\"}} {}\ntidings_deliveries_total{{to=\"node\"}} {}",
            snap.delivered_local,
            load(&self.delivered_to_nodes)
        );
        head(
            &mut out,
            "tidings_delivery_drops_total",
            "Deliveries not made, by reason.",
            "counter",
        );
        for (reason, v) in [
            ("too_slow", snap.too_slow),
            ("given_up", load(&self.deliveries_given_up)),
            ("refused", load(&self.deliveries_refused)),
        ] {
            let _ = writeln!(
                out,
                "tidings_delivery_drops_total{{reason=\"{reason}\"}} {v}"
            );
        }
        head(
            &mut out,
            "tidings_primary_publishes_total",
            "Events other nodes published through this node as primary, by outcome.",
            "counter",
        );
        let _ = writeln!(
            out,
            "tidings_primary_publishes_total{{outcome=\"stored\"}} {}\ntidings_primary_publishes_total{{outcome=\"refused\"}} {}",
            load(&self.primary_stored),
            load(&self.primary_refused)
        );
        head(
            &mut out,
            "tidings_subscribers",
            "Open API subscriptions by transport and kind.",
            "gauge",
        );
        for (t, transport) in ["websocket", "sse"].iter().enumerate() {
            for (k, kind) in ["live", "replay", "durable"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tidings_subscribers{{transport=\"{transport}\",kind=\"{kind}\"}} {}",
                    load(&self.subscribers[t][k])
                );
            }
        }
        for (name, help, v) in [
            (
                "tidings_subscription_leases",
                "Subscription leases held here as a rendezvous member.",
                snap.leases,
            ),
            ("tidings_peers", "Open libp2p connections.", snap.peers),
            (
                "tidings_brokers",
                "Brokers known (this node included if it is one).",
                snap.brokers,
            ),
            (
                "tidings_rendezvous_roots",
                "Roots this node serves as a member of their rendezvous set.",
                snap.roots,
            ),
        ] {
            single(&mut out, name, help, "gauge", v as u64);
        }
        self.publish_ack.render(
            &mut out,
            "tidings_publish_ack_seconds",
            "From a publish request to its acknowledgement by a majority of the rendezvous set.",
        );
        self.publish_commit.render(
            &mut out,
            "tidings_publish_commit_seconds",
            "From signing an event published here to its durable copy in this node's store.",
        );
        self.primary_store.render(
            &mut out,
            "tidings_primary_store_seconds",
            "As a topic's primary, from taking an event to a majority of its rendezvous set holding it durably.",
        );
        self.match_deliver.render(
            &mut out,
            "tidings_match_deliver_seconds",
            "From matching an event on this node to writing it to the subscriber's connection.",
        );
        snap.commit_times.commit.render(
            &mut out,
            "tidings_store_commit_seconds",
            "A group commit of the store: its writes applied and made durable (one fsync). Each write waits for the commit before its own, then for its own.",
        );
        snap.commit_times.checkpoint.render(
            &mut out,
            "tidings_store_checkpoint_seconds",
            "Durable redb commits that emptied the write-ahead log: every write queued meanwhile waits for them.",
        );
        single(
            &mut out,
            "tidings_store_commits_total",
            "Store transactions committed (each one fsync, of the write-ahead log or of redb) by the group committer.",
            "counter",
            snap.commits.commits,
        );
        single(
            &mut out,
            "tidings_store_checkpoints_total",
            "Durable redb commits that emptied the store's write-ahead log.",
            "counter",
            snap.commits.checkpoints,
        );
        single(
            &mut out,
            "tidings_store_commit_operations_total",
            "Writes (publishes, replicas, deliveries, fetched blocks, acks) those commits held: divided by the commits, how many share one fsync.",
            "counter",
            snap.commits.operations,
        );
        if let Some(s) = snap.store {
            single(
                &mut out,
                "tidings_store_blocks",
                "Blocks held in the store.",
                "gauge",
                s.blocks,
            );
            single(
                &mut out,
                "tidings_store_bytes",
                "Bytes of blocks held in the store.",
                "gauge",
                s.bytes,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counted() {
        let m = Metrics::default();
        for ms in [0, 3, 3, 40, 20_000] {
            m.publish_ack.observe(Duration::from_millis(ms));
        }
        let text = m.render(&Snapshot::default());
        assert!(text.contains("tidings_publish_ack_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("tidings_publish_ack_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(text.contains("tidings_publish_ack_seconds_bucket{le=\"0.05\"} 4\n"));
        assert!(text.contains("tidings_publish_ack_seconds_bucket{le=\"10\"} 4\n"));
        assert!(text.contains("tidings_publish_ack_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("tidings_publish_ack_seconds_count 5\n"));
        assert!(text.contains("tidings_publish_ack_seconds_sum 20.046\n"));
    }

    #[test]
    fn the_store_commit_times_are_rendered() {
        let snap = Snapshot::default();
        snap.commit_times.commit.observe(Duration::from_millis(2));
        snap.commit_times.commit.observe(Duration::from_millis(70));
        snap.commit_times
            .checkpoint
            .observe(Duration::from_millis(70));
        let text = Metrics::default().render(&snap);
        assert!(text.contains("tidings_store_commit_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("tidings_store_commit_seconds_count 2\n"));
        assert!(text.contains("tidings_store_checkpoint_seconds_bucket{le=\"0.05\"} 0\n"));
        assert!(text.contains("tidings_store_checkpoint_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("tidings_store_checkpoint_seconds_sum 0.07\n"));
    }

    #[test]
    fn subscriber_gauge_counts_while_held() {
        let m = Metrics::default();
        let a = m.subscriber(Transport::Sse, SubKind::Durable);
        let b = m.subscriber(Transport::Sse, SubKind::Durable);
        let text = m.render(&Snapshot::default());
        assert!(text.contains("tidings_subscribers{transport=\"sse\",kind=\"durable\"} 2\n"));
        drop((a, b));
        let text = m.render(&Snapshot::default());
        assert!(text.contains("tidings_subscribers{transport=\"sse\",kind=\"durable\"} 0\n"));
    }
}
