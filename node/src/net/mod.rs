//! The libp2p network: one task owns the swarm; the rest of the node talks to it through a
//! [`Network`] handle (commands down) and an [`Inbound`] channel (requests up).

pub mod batch;
mod behaviour;
pub mod codec;
pub mod deliver;
pub mod fetch;
mod gate;
pub mod history;
pub mod limits;
pub mod peer_queues;
pub mod penalty;
pub mod publish;
pub mod rendezvous;
pub mod replicate;
pub mod stream_rpc;
pub mod subscribe;
mod swarm;
pub mod wire;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use behaviour::{IDENTIFY_PROTOCOL, KAD_PROTOCOL};
use deliver::{DeliverRequest, DeliverResponse};
use history::{HistoryRequest, HistoryResponse};
pub use penalty::PENALTY;
use publish::{PublishRequest, PublishResponse};
use replicate::{ReplicateRequest, ReplicateResponse};
use subscribe::{SubscribeRequest, SubscribeResponse};
pub use swarm::start;

/// A node's role (docs/protocols.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Always-on, holds rendezvous duty, Kademlia server.
    Broker,
    /// A client: publishes, subscribes, caches and serves blocks; Kademlia client.
    Peer,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "broker" => Ok(Role::Broker),
            "peer" => Ok(Role::Peer),
            other => Err(format!("role must be broker or peer, not {other:?}")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Broker => "broker",
            Role::Peer => "peer",
        })
    }
}

/// How to run the network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on (TCP and/or QUIC).
    pub listen: Vec<Multiaddr>,
    /// `MULTIADDR/p2p/ID` of nodes to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Broker or peer.
    pub role: Role,
    /// Rendezvous set size `K`.
    pub replication: usize,
    /// Requests per second one peer may send on the tidings protocols (see [`limits`]).
    pub request_rate: u32,
}

/// Errors of the network layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// The peer could not be reached or did not answer in time.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// The network task has stopped (shutdown).
    #[error("the network is shutting down")]
    Stopped,
    /// Bad configuration (listen address, bootstrap address).
    #[error("{0}")]
    Config(String),
}

/// What the network knows, readable without a round trip to the swarm task.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    /// Brokers known through Kademlia (this node included when it is a broker).
    pub brokers: BTreeSet<PeerId>,
    /// This node's listen addresses, with `/p2p/<id>`.
    pub listen: Vec<Multiaddr>,
    /// Peers with an open connection.
    pub connected: BTreeSet<PeerId>,
    /// Bumped whenever `brokers` changes, so users can tell the sets may have moved.
    pub epoch: u64,
}

/// An outbound request on one of the tidings protocols.
#[derive(Debug)]
pub(crate) enum Outbound {
    Publish(
        PublishRequest,
        oneshot::Sender<Result<PublishResponse, NetError>>,
    ),
    Replicate(
        ReplicateRequest,
        oneshot::Sender<Result<ReplicateResponse, NetError>>,
    ),
    Subscribe(
        SubscribeRequest,
        oneshot::Sender<Result<SubscribeResponse, NetError>>,
    ),
    Deliver(
        DeliverRequest,
        oneshot::Sender<Result<DeliverResponse, NetError>>,
    ),
    History(
        HistoryRequest,
        oneshot::Sender<Result<HistoryResponse, NetError>>,
    ),
}

/// Commands to the swarm task.
#[derive(Debug)]
pub(crate) enum Command {
    Request(PeerId, Outbound),
    /// Close every connection to a peer (it misbehaved).
    Disconnect(PeerId),
}

/// A request from a remote peer; answer through `reply` (dropping it refuses).
#[derive(Debug)]
pub enum Inbound {
    /// An author's node publishes through us as primary.
    Publish {
        /// Sender.
        peer: PeerId,
        /// The request.
        req: PublishRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<PublishResponse>,
        /// The protocol it came on (named in logs).
        protocol: &'static str,
    },
    /// The primary replicates to us.
    Replicate {
        /// Sender.
        peer: PeerId,
        /// The request.
        req: ReplicateRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ReplicateResponse>,
        /// The protocol it came on (named in logs).
        protocol: &'static str,
    },
    /// A subscriber's node leases a subscription here.
    Subscribe {
        /// Sender.
        peer: PeerId,
        /// The request.
        req: SubscribeRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<SubscribeResponse>,
        /// The protocol it came on (named in logs).
        protocol: &'static str,
    },
    /// A subscriber's node opens, acks, deletes or reads a durable subscription, or replays.
    History {
        /// Sender.
        peer: PeerId,
        /// The request.
        req: HistoryRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<HistoryResponse>,
        /// The protocol it came on (named in logs).
        protocol: &'static str,
    },
    /// A primary delivers matched events to us.
    Deliver {
        /// Sender.
        peer: PeerId,
        /// The request.
        req: DeliverRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<DeliverResponse>,
        /// The protocol it came on (named in logs).
        protocol: &'static str,
    },
}

/// Handle to the running network.
#[derive(Clone)]
pub struct Network {
    cmd: mpsc::Sender<Command>,
    local: PeerId,
    role: Role,
    replication: usize,
    directory: Arc<RwLock<Directory>>,
    /// Rendezvous sets as of the directory's epoch.
    sets: Arc<rendezvous::SetCache>,
    streams: libp2p_stream::Control,
    /// `/tidings/publish/3`: publishes to primaries, one stream per primary.
    publish_stream: Arc<stream_rpc::Client<PublishRequest, PublishResponse>>,
    /// `/tidings/replicate/2`: replicas, one stream per member of the set.
    replicate_stream: Arc<stream_rpc::Client<ReplicateRequest, ReplicateResponse>>,
    /// `/tidings/deliver/2`: deliveries, one stream per subscriber's node.
    deliver_stream: Arc<stream_rpc::Client<DeliverRequest, DeliverResponse>>,
    penalties: penalty::Penalties,
    /// The IPFS backend, when the node has one: history fetches ask it for what no peer has.
    ipfs: Arc<std::sync::OnceLock<Arc<crate::ipfs::Ipfs>>>,
}

/// A request's answer from the swarm task (which drops the sender only when stopping).
async fn answer<T>(rx: oneshot::Receiver<Result<T, NetError>>) -> Result<T, NetError> {
    rx.await.map_err(|_| NetError::Stopped)?
}

impl Network {
    /// Opens a `/tidings/fetch/1` stream to `peer` (dialling it if needed).
    pub async fn open_fetch(&self, peer: PeerId) -> Result<libp2p::Stream, NetError> {
        let mut control = self.streams.clone();
        control
            .open_stream(peer, fetch::PROTOCOL)
            .await
            .map_err(|e| NetError::Unreachable {
                peer,
                reason: e.to_string(),
            })
    }

    /// Inbound `/tidings/fetch/1` streams; `None` if already taken.
    pub fn accept_fetch(&self) -> Option<libp2p_stream::IncomingStreams> {
        self.streams.clone().accept(fetch::PROTOCOL).ok()
    }

    /// Records that `peer` misbehaved (sent a bad block), logging why: it is disconnected, and
    /// neither asked nor served for [`PENALTY`].
    pub async fn penalise(&self, peer: PeerId, why: &str) {
        self.penalties.penalise(peer, why);
        self.disconnect(peer).await;
    }

    /// Closes every connection to `peer`.
    pub(crate) async fn disconnect(&self, peer: PeerId) {
        let _ = self.cmd.send(Command::Disconnect(peer)).await;
    }

    /// Sets the IPFS backend (once, at start-up), which history fetches fall back on.
    pub fn set_ipfs(&self, ipfs: Arc<crate::ipfs::Ipfs>) {
        let _ = self.ipfs.set(ipfs);
    }

    /// The IPFS backend, if the node has one.
    pub fn ipfs(&self) -> Option<Arc<crate::ipfs::Ipfs>> {
        self.ipfs.get().cloned()
    }

    /// Whether `peer` is serving a penalty.
    pub fn is_penalised(&self, peer: &PeerId) -> bool {
        self.penalties.is_penalised(peer)
    }

    /// This node's peer id.
    pub fn local_peer(&self) -> PeerId {
        self.local
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Rendezvous set size `K`.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// A snapshot of what the network knows.
    pub fn directory(&self) -> Directory {
        self.directory.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Waits until the swarm reports a listen address (the listeners were opened just before;
    /// their addresses arrive as events). False if none came `within`.
    pub async fn wait_listening(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.directory.read().is_ok_and(|d| !d.listen.is_empty()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The rendezvous set of `root` as this node sees it now, closest first.
    pub fn rendezvous_set(&self, root: &str) -> Vec<PeerId> {
        let d = self.directory.read();
        match d {
            Ok(d) => self
                .sets
                .set_for_root(d.epoch, &d.brokers, root, self.replication),
            Err(_) => Vec::new(),
        }
    }

    async fn request<T>(
        &self,
        peer: PeerId,
        make: impl FnOnce(oneshot::Sender<Result<T, NetError>>) -> Outbound,
    ) -> Result<T, NetError> {
        answer(self.send(peer, make).await?).await
    }

    /// Hands a request to the swarm task (in call order); the receiver gets its answer.
    async fn send<T>(
        &self,
        peer: PeerId,
        make: impl FnOnce(oneshot::Sender<Result<T, NetError>>) -> Outbound,
    ) -> Result<oneshot::Receiver<Result<T, NetError>>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Request(peer, make(tx)))
            .await
            .map_err(|_| NetError::Stopped)?;
        Ok(rx)
    }

    /// Hands a publish request to `peer` (requests go out in the order they were handed) and
    /// returns its answer, to wait for after. [`crate::pubsub::publishes`] batches events
    /// into these requests and bounds how many are in flight. It goes on the peer's
    /// `/tidings/publish/3` stream, or as a `/tidings/publish/2` request to a node without it.
    pub async fn send_publish(
        &self,
        peer: PeerId,
        req: PublishRequest,
    ) -> Result<
        impl std::future::Future<Output = Result<PublishResponse, NetError>> + use<>,
        NetError,
    > {
        Ok(self.streamed(&self.publish_stream, peer, req, Outbound::Publish))
    }

    /// Sends blocks to replicate to `peer`: on its `/tidings/replicate/2` stream, or as a
    /// `/tidings/replicate/1` request to a node without it.
    pub async fn replicate(
        &self,
        peer: PeerId,
        req: ReplicateRequest,
    ) -> Result<ReplicateResponse, NetError> {
        self.streamed(&self.replicate_stream, peer, req, Outbound::Replicate)
            .await
    }

    /// Queues a request for `peer` now, on its stream of `client`'s protocol, and returns its
    /// answer, to wait for after; a peer that lacks the protocol is sent the request over
    /// request-response as `outbound` instead.
    fn streamed<Req, Resp>(
        &self,
        client: &stream_rpc::Client<Req, Resp>,
        peer: PeerId,
        req: Req,
        outbound: fn(Req, oneshot::Sender<Result<Resp, NetError>>) -> Outbound,
    ) -> impl std::future::Future<Output = Result<Resp, NetError>> + use<Req, Resp>
    where
        Req: serde::Serialize + Send + 'static,
        Resp: serde::de::DeserializeOwned + Send + 'static,
    {
        let call = client.call(peer, req);
        let net = self.clone();
        async move {
            match call.await {
                Ok(answer) => Ok(answer),
                Err(stream_rpc::CallError::Failed(e)) => Err(e),
                Err(stream_rpc::CallError::Unsupported(req)) => {
                    net.request(peer, |tx| outbound(req, tx)).await
                }
            }
        }
    }

    /// Sends a subscription lease or cancel to `peer`.
    pub async fn subscribe(
        &self,
        peer: PeerId,
        req: SubscribeRequest,
    ) -> Result<SubscribeResponse, NetError> {
        self.request(peer, |tx| Outbound::Subscribe(req, tx)).await
    }

    /// Sends a durable-subscription or replay request to `peer`.
    pub async fn history(
        &self,
        peer: PeerId,
        req: HistoryRequest,
    ) -> Result<HistoryResponse, NetError> {
        self.request(peer, |tx| Outbound::History(req, tx)).await
    }

    /// Delivers events to `peer`: on its `/tidings/deliver/2` stream, or as a
    /// `/tidings/deliver/1` request to a node without it.
    pub async fn deliver(
        &self,
        peer: PeerId,
        req: DeliverRequest,
    ) -> Result<DeliverResponse, NetError> {
        self.streamed(&self.deliver_stream, peer, req, Outbound::Deliver)
            .await
    }
}
