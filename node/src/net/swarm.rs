//! The swarm task: owns the libp2p `Swarm`, turns commands into requests, inbound requests into
//! [`Inbound`] messages, and keeps the [`Directory`] current.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, kad, noise, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::codec::{Malformed, Received};
use super::deliver::{self, DeliverResponse};
use super::history::{self, HistoryResponse};
use super::limits::{Admission, RateLimit};
use super::penalty::Penalties;
use super::publish::{self, PublishResponse};
use super::replicate::{self, ReplicateResponse};
use super::stream_rpc;
use super::subscribe::{self, SubscribeResponse};
use super::{Command, Directory, Inbound, NetConfig, NetError, Network, Outbound, Role};

/// Handles one request-response event of protocol `$variant`: an inbound request goes up as
/// `Inbound::$variant` (if the peer is admitted and the request well-formed), anything else
/// settles a pending outbound request in `self.$pending`.
macro_rules! on_rr {
    ($self:ident, $ev:expr, $pending:ident, $variant:ident, $protocol:expr, $refused:expr) => {
        match $ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                $self
                    .inbound(
                        peer,
                        $protocol,
                        request,
                        channel,
                        |peer, req, reply| Inbound::$variant {
                            peer,
                            req,
                            reply,
                            protocol: $protocol,
                        },
                        $refused,
                        Reply::$variant,
                    )
                    .await;
            }
            other => settle(&mut $self.$pending, other),
        }
    };
}

/// How often unconnected bootstrap nodes are dialled again.
const REDIAL: Duration = Duration::from_secs(3);

type Pending<T> = HashMap<OutboundRequestId, oneshot::Sender<Result<T, NetError>>>;

/// An answer from the node, ready to go back on the wire.
enum Reply {
    Publish(ResponseChannel<PublishResponse>, PublishResponse),
    Replicate(ResponseChannel<ReplicateResponse>, ReplicateResponse),
    Subscribe(ResponseChannel<SubscribeResponse>, SubscribeResponse),
    Deliver(ResponseChannel<DeliverResponse>, DeliverResponse),
    History(ResponseChannel<HistoryResponse>, HistoryResponse),
}

struct Task {
    swarm: Swarm<Behaviour>,
    role: Role,
    directory: Arc<RwLock<Directory>>,
    inbound: mpsc::Sender<Inbound>,
    replies: FuturesUnordered<BoxFuture<'static, Reply>>,
    publish: Pending<PublishResponse>,
    replicate: Pending<ReplicateResponse>,
    subscribe: Pending<SubscribeResponse>,
    deliver: Pending<DeliverResponse>,
    history: Pending<HistoryResponse>,
    last_lookup: std::time::Instant,
    /// Bootstrap addresses, dialled again while their node is not connected: after a restart
    /// or a healed partition, that is how a node finds the network again.
    bootstrap: Vec<(PeerId, Multiaddr)>,
    /// Kademlia lookups under way for bootstrap nodes not reachable at their address (see
    /// [`Task::redial`]): query → the node looked for.
    lookups: HashMap<kad::QueryId, PeerId>,
    gate: Option<super::gate::Gate>,
    penalties: Penalties,
    admission: Admission,
}

/// Builds the swarm, starts listening and dialling, and spawns the swarm task.
pub fn start(
    keypair: identity::Keypair,
    config: NetConfig,
) -> Result<(Network, mpsc::Receiver<Inbound>, JoinHandle<()>), NetError> {
    let broker = config.role == Role::Broker;
    let agent = format!("tidings/{} {}", env!("CARGO_PKG_VERSION"), config.role);
    let cfg_err = |e: &dyn std::fmt::Display| NetError::Config(e.to_string());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| cfg_err(&e))?
        .with_quic()
        .with_behaviour(|key| Behaviour::new(key, broker, agent))
        .map_err(|e| cfg_err(&e))?
        .with_swarm_config(|c| {
            // Each request opens a stream: naming its protocol and sending at once saves the
            // round trip of negotiating first, on every hop of a publish (V1 waited for it).
            c.with_idle_connection_timeout(Duration::from_secs(120))
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    let local = *swarm.local_peer_id();
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| {
            NetError::Config(format!("cannot listen on {addr}: {}", error_chain(&e)))
        })?;
    }
    let mut bootstrap = Vec::new();
    for addr in &config.bootstrap {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(NetError::Config(format!(
                "bootstrap address {addr} must end in /p2p/<peer id>"
            )));
        };
        let transport_addr: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        swarm.behaviour_mut().kad.add_address(&peer, transport_addr);
        bootstrap.push((peer, addr.clone()));
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap node");
        }
    }
    let mut dir = Directory::default();
    if broker {
        dir.brokers.insert(local);
    }
    let directory = Arc::new(RwLock::new(dir));
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (in_tx, in_rx) = mpsc::channel(1024);
    let streams = swarm.behaviour().stream.new_control();
    let penalties = Penalties::default();
    let admission = Admission::new(
        penalties.clone(),
        RateLimit::per_second(config.request_rate),
    );
    let network = Network {
        publish_stream: Arc::new(stream_rpc::Client::new(
            StreamProtocol::new(publish::STREAM_PROTOCOL),
            streams.clone(),
        )),
        replicate_stream: Arc::new(stream_rpc::Client::new(
            StreamProtocol::new(replicate::STREAM_PROTOCOL),
            streams.clone(),
        )),
        deliver_stream: Arc::new(stream_rpc::Client::new(
            StreamProtocol::new(deliver::STREAM_PROTOCOL),
            streams.clone(),
        )),
        streams,
        sets: Arc::default(),
        penalties: penalties.clone(),
        cmd: cmd_tx,
        local,
        role: config.role,
        replication: config.replication.max(1),
        directory: directory.clone(),
        ipfs: Arc::default(),
    };
    if stream_rpc::served() {
        let serving = (&network, &admission, &in_tx);
        serve_stream(
            serving,
            publish::STREAM_PROTOCOL,
            |peer, req, reply, protocol| Inbound::Publish {
                peer,
                req,
                reply,
                protocol,
            },
            PublishResponse::refused,
        );
        serve_stream(
            serving,
            replicate::STREAM_PROTOCOL,
            |peer, req, reply, protocol| Inbound::Replicate {
                peer,
                req,
                reply,
                protocol,
            },
            ReplicateResponse::Refused,
        );
        serve_stream(
            serving,
            deliver::STREAM_PROTOCOL,
            |peer, req, reply, protocol| Inbound::Deliver {
                peer,
                req,
                reply,
                protocol,
            },
            DeliverResponse::Refused,
        );
    }
    let task = Task {
        swarm,
        role: config.role,
        directory,
        inbound: in_tx,
        replies: FuturesUnordered::new(),
        publish: HashMap::new(),
        replicate: HashMap::new(),
        subscribe: HashMap::new(),
        deliver: HashMap::new(),
        history: HashMap::new(),
        last_lookup: std::time::Instant::now() - Duration::from_secs(60),
        bootstrap,
        lookups: HashMap::new(),
        gate: super::gate::Gate::from_env(),
        penalties,
        admission,
    };
    let handle = tokio::spawn(task.run(cmd_rx));
    Ok((network, in_rx, handle))
}

/// Serves one stream protocol in a task of its own: its requests are handed up as `wrap` makes
/// them, and refused (penalised or rate-limited peer) with `refused`.
fn serve_stream<Req, Resp>(
    (net, admission, inbound): (&Network, &Admission, &mpsc::Sender<Inbound>),
    protocol: &'static str,
    wrap: fn(PeerId, Req, oneshot::Sender<Resp>, &'static str) -> Inbound,
    refused: fn(String) -> Resp,
) where
    Req: serde::de::DeserializeOwned + Send + 'static,
    Resp: serde::Serialize + Send + 'static,
{
    let serve = stream_rpc::Serve {
        protocol,
        wrap,
        refused,
    };
    let (net, admission, inbound) = (net.clone(), admission.clone(), inbound.clone());
    tokio::spawn(stream_rpc::serve(net, admission, inbound, serve));
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut bootstrap = tokio::time::interval(Duration::from_secs(30));
        let mut redial = tokio::time::interval(REDIAL);
        let mut gate = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_event(ev).await,
                Some(reply) = self.replies.next() => self.on_reply(reply),
                _ = bootstrap.tick() => {
                    // Refreshes the routing table; fails harmlessly while no peer is known.
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                _ = redial.tick() => self.redial(),
                _ = gate.tick(), if self.gate.is_some() => {
                    if let Some(g) = self.gate.as_mut() {
                        g.apply(&mut self.swarm.behaviour_mut().blocked);
                    }
                }
            }
        }
        tracing::debug!("network task stopped");
    }

    /// Dials the bootstrap nodes that are not connected (a no-op while they are). A node that
    /// restarted on another port no longer answers at the address given, and nothing else
    /// brings a peer-role node (which no broker dials) back to it before the next periodic
    /// refresh: so it is also looked up, by its peer id, through the brokers this node reaches,
    /// which learnt its new address when it dialled them; the answer is dialled in
    /// [`Task::on_lookup`].
    fn redial(&mut self) {
        let reachable = self.swarm.connected_peers().next().is_some();
        for (peer, addr) in &self.bootstrap {
            if self.swarm.is_connected(peer) {
                continue;
            }
            let _ = self.swarm.dial(addr.clone());
            if reachable && !self.lookups.values().any(|p| p == peer) {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(*peer);
                self.lookups.insert(id, *peer);
            }
        }
    }

    /// Dials a bootstrap node a lookup found, at the addresses the network knows for it now.
    fn on_lookup(&mut self, id: kad::QueryId, peers: Vec<kad::PeerInfo>, last: bool) {
        let Some(&wanted) = self.lookups.get(&id) else {
            return;
        };
        if last {
            self.lookups.remove(&id);
        }
        let Some(found) = peers.into_iter().find(|p| p.peer_id == wanted) else {
            return;
        };
        if found.addrs.is_empty() || self.swarm.is_connected(&wanted) {
            return;
        }
        tracing::debug!(peer = %wanted, addrs = ?found.addrs, "bootstrap node found at a new address");
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(wanted)
            .addresses(found.addrs)
            .build();
        let _ = self.swarm.dial(opts);
    }

    fn on_command(&mut self, cmd: Command) {
        let (peer, out) = match cmd {
            Command::Request(peer, out) => (peer, out),
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
                return;
            }
        };
        let b = self.swarm.behaviour_mut();
        match out {
            Outbound::Publish(req, tx) => {
                let id = b.publish.send_request(&peer, Received::Ok(req));
                self.publish.insert(id, tx);
            }
            Outbound::Replicate(req, tx) => {
                let id = b.replicate.send_request(&peer, Received::Ok(req));
                self.replicate.insert(id, tx);
            }
            Outbound::Subscribe(req, tx) => {
                let id = b.subscribe.send_request(&peer, Received::Ok(req));
                self.subscribe.insert(id, tx);
            }
            Outbound::Deliver(req, tx) => {
                let id = b.deliver.send_request(&peer, Received::Ok(req));
                self.deliver.insert(id, tx);
            }
            Outbound::History(req, tx) => {
                let id = b.history.send_request(&peer, Received::Ok(req));
                self.history.insert(id, tx);
            }
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        let b = self.swarm.behaviour_mut();
        // An error here means the requester went away; nothing to do.
        let _ = match reply {
            Reply::Publish(ch, r) => b.publish.send_response(ch, r).is_ok(),
            Reply::Replicate(ch, r) => b.replicate.send_response(ch, r).is_ok(),
            Reply::Subscribe(ch, r) => b.subscribe.send_response(ch, r).is_ok(),
            Reply::Deliver(ch, r) => b.deliver.send_response(ch, r).is_ok(),
            Reply::History(ch, r) => b.history.send_response(ch, r).is_ok(),
        };
    }

    /// Hands an inbound request up and queues the answer for when the node gives it; refuses it
    /// at once if the peer is not [admitted](Task::admit) or the request is malformed (which
    /// penalises the peer, unless the request was only cut short: a reset stream does that).
    #[allow(clippy::too_many_arguments)]
    async fn inbound<Req, Resp>(
        &mut self,
        peer: PeerId,
        protocol: &str,
        req: Received<Req>,
        channel: ResponseChannel<Resp>,
        wrap: fn(PeerId, Req, oneshot::Sender<Resp>) -> Inbound,
        refused: fn(String) -> Resp,
        reply: fn(ResponseChannel<Resp>, Resp) -> Reply,
    ) where
        Resp: Send + 'static,
    {
        if let Err(why) = self.admit(peer, protocol) {
            self.on_reply(reply(channel, refused(why)));
            return;
        }
        let req = match req {
            Received::Ok(req) => req,
            Received::Malformed(m) => {
                let why = format!("{protocol} request: {m}");
                if let Malformed::Truncated(_) = m {
                    tracing::debug!(%peer, reason = %why, "truncated request refused");
                } else {
                    self.penalise(peer, &why);
                }
                self.on_reply(reply(channel, refused(why)));
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        if self.inbound.send(wrap(peer, req, tx)).await.is_err() {
            return;
        }
        self.replies.push(Box::pin(async move {
            let r = rx
                .await
                .unwrap_or_else(|_| refused("the node dropped the request".into()));
            reply(channel, r)
        }));
    }

    /// Whether to serve a request from `peer` now; `Err` says why not (see
    /// [`Admission::admit`]). A flooder's connections are closed.
    fn admit(&mut self, peer: PeerId, protocol: &str) -> Result<(), String> {
        self.admission.admit(peer, protocol).map_err(|denied| {
            if denied.flood.is_some() {
                // Not for a merely penalised peer: its connections from outside are closed as
                // they open, so this one is ours, and we may still need it (say, to publish
                // through it).
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            denied.why
        })
    }

    /// Penalises `peer` (logging why) and closes its connections.
    fn penalise(&mut self, peer: PeerId, why: &str) {
        self.penalties.penalise(peer, why);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    async fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(address = %full, "listening");
                if let Ok(mut d) = self.directory.write() {
                    d.listen.push(full);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                // Cheaper than refusing its requests one by one, and it gets nothing else
                // (identify, Kademlia) either.
                if endpoint.is_listener() && self.penalties.is_penalised(&peer_id) {
                    tracing::debug!(peer = %peer_id, "connection from a penalised peer refused");
                    self.swarm.close_connection(connection_id);
                    return;
                }
                if let Ok(mut d) = self.directory.write() {
                    d.connected.insert(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "disconnected");
                if let Ok(mut d) = self.directory.write() {
                    d.connected.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                // A broker we cannot reach leaves the sets until identify brings it back.
                tracing::debug!(%peer, %error, "dial failed");
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                self.refresh_brokers();
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev).await,
            _ => {}
        }
    }

    fn refresh_brokers(&mut self) {
        let local = *self.swarm.local_peer_id();
        let mut brokers: std::collections::BTreeSet<PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect();
        if self.role == Role::Broker {
            brokers.insert(local);
        }
        if let Ok(mut d) = self.directory.write()
            && d.brokers != brokers
        {
            tracing::info!(brokers = brokers.len(), "rendezvous directory changed");
            d.brokers = brokers;
            d.epoch += 1;
        }
    }

    async fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            // Only brokers serve our Kademlia protocol: they go in the routing table.
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) =>
            {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { is_new_peer, .. }) => {
                self.refresh_brokers();
                // A new neighbour knows others: look for the rest of the network now rather
                // than at the next periodic bootstrap.
                if is_new_peer && self.last_lookup.elapsed() > Duration::from_millis(500) {
                    self.last_lookup = std::time::Instant::now();
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result:
                    kad::QueryResult::Bootstrap(Ok(kad::BootstrapOk {
                        num_remaining: 0, ..
                    })),
                ..
            }) => self.refresh_brokers(),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(found),
                step,
                ..
            }) => {
                let peers = match found {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                self.on_lookup(id, peers, step.last);
            }
            BehaviourEvent::Publish(e) => {
                on_rr!(
                    self,
                    e,
                    publish,
                    Publish,
                    publish::PROTOCOL,
                    PublishResponse::refused
                )
            }
            BehaviourEvent::Replicate(e) => on_rr!(
                self,
                e,
                replicate,
                Replicate,
                replicate::PROTOCOL,
                ReplicateResponse::Refused
            ),
            BehaviourEvent::Subscribe(e) => on_rr!(
                self,
                e,
                subscribe,
                Subscribe,
                subscribe::PROTOCOL,
                SubscribeResponse::Refused
            ),
            BehaviourEvent::Deliver(e) => on_rr!(
                self,
                e,
                deliver,
                Deliver,
                deliver::PROTOCOL,
                DeliverResponse::Refused
            ),
            BehaviourEvent::History(e) => on_rr!(
                self,
                e,
                history,
                History,
                history::PROTOCOL,
                HistoryResponse::Refused
            ),
            _ => {}
        }
    }
}

/// An error and its sources as one line (libp2p's transport errors keep the cause in `source`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cur = s.source();
    }
    if out.is_empty() {
        format!("{e:?}")
    } else {
        out
    }
}

/// Completes a pending outbound request from a response or failure event.
fn settle<Req, Resp>(pending: &mut Pending<Resp>, ev: request_response::Event<Req, Resp>) {
    use request_response::{Event as RrEvent, Message};
    match ev {
        RrEvent::Message {
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            if let Some(tx) = pending.remove(&request_id) {
                let _ = tx.send(Ok(response));
            }
        }
        RrEvent::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            if let Some(tx) = pending.remove(&request_id) {
                let _ = tx.send(Err(NetError::Unreachable {
                    peer,
                    reason: error.to_string(),
                }));
            }
        }
        // Not the peer's doing: timeouts, closed connections, answers we dropped. (Requests that
        // do not decode arrive as `Received::Malformed` requests instead.)
        RrEvent::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, %error, "inbound request failed");
        }
        _ => {}
    }
}
