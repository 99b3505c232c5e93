//! `/tidings/history/1`: durable subscriptions and replay, asked of a root's rendezvous set.
//!
//! A durable subscription is named by its subscriber node and a name; every member of the set
//! keeps its record (filter, where it started, what was acknowledged) in its store, so losing
//! one member loses nothing. The matched, unacknowledged events are the stored events of the
//! root after the record's start that match the filter and are above the acknowledged `seq` of
//! their stream; a returning subscriber reads them (and a replay reads stored events) in pages.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name.
pub const PROTOCOL: &str = "/tidings/history/1";

/// One stream's acknowledgement: every matching event of (author, topic) up to `seq` is acked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    /// Author key bytes.
    pub author: ByteBuf,
    /// Topic.
    pub topic: String,
    /// Highest acknowledged seq.
    pub seq: u64,
}

/// A request to a rendezvous member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HistoryRequest {
    /// Create the sender's durable subscription `name`, or touch it if it exists with the same
    /// filter. `since` (ms) makes a new one start from stored history instead of live.
    DurableOpen {
        /// Durable name.
        name: String,
        /// Filter source.
        filter: String,
        /// Replay stored events with `time >= since` into a new durable's backlog.
        since: Option<u64>,
    },
    /// Acknowledgements (cumulative per stream).
    DurableAck {
        /// Durable name.
        name: String,
        /// Per-stream acks.
        acks: Vec<Ack>,
    },
    /// Delete the sender's durable subscription `name`.
    DurableDelete {
        /// Durable name.
        name: String,
    },
    /// A page of stored events matching `filter`: the backlog of the sender's durable `durable`,
    /// or those with `time >= since`.
    Query {
        /// Filter source.
        filter: String,
        /// Read this durable's backlog.
        durable: Option<String>,
        /// Or: events at or after this time (ms since epoch; 0 = from the start).
        since: Option<u64>,
        /// Resume at this log position (0 to begin).
        cursor: u64,
        /// Most events in the answer (the member also stops at
        /// [`super::batch::MESSAGE_BUDGET`] bytes of them; `next` says where to go on).
        max_events: u32,
    },
    /// The subscription leases of `root` held by the member: a broker about to act as primary
    /// for the first time since it started asks for them, so it routes to every subscriber
    /// at once instead of after their next renewal.
    Leases {
        /// Root segment.
        root: String,
    },
    /// Replica sync between members of a root's set: the tips of every stream of `root` and
    /// the durable subscription records of that root held here, in as many answers as it takes.
    Tips {
        /// Root segment.
        root: String,
        /// Continue where the previous answer's `next` said (`None`: from the start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<TipsFrom>,
    },
}

/// Where a `Tips` answer continues: answers are filled up to a byte budget
/// ([`super::batch`]), so a root with many streams or durables takes several.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum TipsFrom {
    /// At this stream (then the durables).
    Stream {
        /// Author key bytes.
        author: ByteBuf,
        /// Topic.
        topic: String,
    },
    /// At this durable key (the streams are done).
    Durable(String),
}

/// One (author, topic) stream's newest event as a member holds it (replica sync).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tip {
    /// Author key bytes.
    pub author: ByteBuf,
    /// Topic.
    pub topic: String,
    /// Highest seq held.
    pub seq: u64,
    /// Its CID bytes.
    pub cid: ByteBuf,
    /// The stream's pruned past on this member: its events up to this seq are gone (retention),
    /// so a member that lacks them does not chase them as a hole (absent: 0, nothing pruned).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pruned: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A subscription lease as a member holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    /// The subscriber node's peer id bytes.
    pub peer: ByteBuf,
    /// Its subscription id.
    pub id: u64,
    /// Filter source.
    pub filter: String,
    /// Milliseconds left.
    pub ms_left: u64,
    /// When it was first leased (ms since epoch).
    #[serde(default)]
    pub since_ms: u64,
}

/// A member's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HistoryResponse {
    /// Done.
    Ok {
        /// For `DurableOpen`: whether the durable already existed here.
        existed: bool,
    },
    /// `DurableOpen` with another filter than the existing durable's.
    Conflict(String),
    /// No such durable here.
    NotFound,
    /// A page of events, log order.
    Page {
        /// (CID bytes, block bytes).
        events: Vec<(ByteBuf, ByteBuf)>,
        /// Where to continue, or `None` at the end of the log.
        next: Option<u64>,
        /// The durable's acks as this member holds them.
        acked: Vec<Ack>,
    },
    /// The answer to `Tips`.
    Tips {
        /// Every stream of the root held here.
        streams: Vec<Tip>,
        /// (durable key, DAG-CBOR record) of the root's durable subscriptions.
        durables: Vec<(String, ByteBuf)>,
        /// Where the next answer starts, if this one was full: ask again with it as `from`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<TipsFrom>,
    },
    /// The answer to `Leases`.
    Leases(Vec<Lease>),
    /// Refused (not a broker, bad filter, store failure).
    Refused(String),
}
