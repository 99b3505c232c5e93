//! The combined libp2p behaviour: Kademlia, identify, ping and tidings' request-response
//! protocols.

use std::time::Duration;

use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, identify, identity, kad, ping};

use super::codec::Codec;
use super::deliver::{self, DeliverRequest, DeliverResponse};
use super::history::{self, HistoryRequest, HistoryResponse};
use super::publish::{self, PublishRequest, PublishResponse};
use super::replicate::{self, ReplicateRequest, ReplicateResponse};
use super::subscribe::{self, SubscribeRequest, SubscribeResponse};

/// tidings' own DHT protocol, so rendezvous keys never leak into the public IPFS DHT.
pub const KAD_PROTOCOL: &str = "/tidings/kad/1.0.0";
/// identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/tidings/id/1.0.0";

/// A request-response behaviour of tidings' [`Codec`].
pub type Rr<Req, Resp> = request_response::Behaviour<Codec<Req, Resp>>;

/// Every protocol a node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Peers refused at the connection level (the test-only partition gate, see `gate`).
    pub blocked: allow_block_list::Behaviour<BlockedPeers>,
    /// Kademlia on `/tidings/kad/1.0.0`: brokers in server mode, peers in client mode.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// identify: learns listen addresses and protocols of connected peers.
    pub identify: identify::Behaviour,
    /// ping: liveness.
    pub ping: ping::Behaviour,
    /// `/tidings/publish/2`.
    pub publish: Rr<PublishRequest, PublishResponse>,
    /// `/tidings/replicate/1`.
    pub replicate: Rr<ReplicateRequest, ReplicateResponse>,
    /// `/tidings/subscribe/1`.
    pub subscribe: Rr<SubscribeRequest, SubscribeResponse>,
    /// `/tidings/deliver/1`.
    pub deliver: Rr<DeliverRequest, DeliverResponse>,
    /// `/tidings/history/1`.
    pub history: Rr<HistoryRequest, HistoryResponse>,
    /// Raw streams: `/tidings/fetch/1` streams blocks, which request-response cannot.
    pub stream: libp2p_stream::Behaviour,
}

/// Streams of one request-response protocol a connection takes at once, each way.
pub const MAX_STREAMS: usize = 256;

fn rr<Req, Resp>(name: &'static str) -> Rr<Req, Resp>
where
    Req: Send + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static,
    Resp: Send + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    request_response::Behaviour::with_codec(
        Codec::default(),
        [(StreamProtocol::new(name), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(MAX_STREAMS),
    )
}

impl Behaviour {
    /// Builds the behaviour for `key`; `broker` selects Kademlia server mode.
    pub fn new(key: &identity::Keypair, broker: bool, agent: String) -> Behaviour {
        let peer_id = key.public().to_peer_id();
        let mut cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        cfg.set_query_timeout(Duration::from_secs(10));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), cfg);
        // Set explicitly: brokers must be found by others even before they learn an external
        // address; peers must never be chosen for rendezvous duty.
        kad.set_mode(Some(if broker {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));
        Behaviour {
            blocked: allow_block_list::Behaviour::default(),
            kad,
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(agent),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            publish: rr(publish::PROTOCOL),
            replicate: rr(replicate::PROTOCOL),
            subscribe: rr(subscribe::PROTOCOL),
            deliver: rr(deliver::PROTOCOL),
            history: rr(history::PROTOCOL),
            stream: libp2p_stream::Behaviour::new(),
        }
    }
}
