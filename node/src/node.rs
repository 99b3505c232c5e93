//! Wiring: builds the identity, store, router and API from a [`NodeConfig`] and runs them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, NodeInfo};
use crate::identity::{self, IdentityError};
use crate::metrics::Metrics;
use crate::net::{self, NetConfig, NetError};
use crate::pubsub::local::LocalSubs;
use crate::pubsub::{Router, inbound};
use crate::store::{Store, StoreError};

/// File in the data dir holding the API's bound address (useful with `--api 127.0.0.1:0`).
pub const API_ADDR_FILE: &str = "api.addr";
/// How long start-up waits for the swarm to report its listen addresses.
const LISTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// File name of the embedded database inside the data dir.
pub const STORE_FILE: &str = "store.redb";
/// What subscribers are told when the node stops (WebSocket close reason, SSE `error` event).
/// How long shutdown waits for subscribers' connections to send their close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const SHUTDOWN_REASON: &str = "the node is shutting down: reconnect to it or another node";

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data directory: identity, store, api.addr.
    pub data_dir: PathBuf,
    /// Address for the HTTP API (port 0 picks a free one).
    pub api: SocketAddr,
    /// Bearer token required by the API; mandatory when `api` is not loopback.
    pub token: Option<String>,
    /// Origins whose browser pages may use the API (CORS); `*` for any; empty: none.
    pub cors_origins: Vec<String>,
    /// libp2p: listen addresses, bootstrap nodes, role, replication.
    pub net: NetConfig,
    /// Retention and durable-subscription expiry.
    pub history: crate::history::HistoryConfig,
    /// An IPFS node's HTTP RPC (`http://HOST:PORT` or its multiaddr): every stored block is
    /// mirrored into it, and history no peer has is asked of it. `None`: no IPFS backend.
    pub ipfs_api: Option<String>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory cannot be created or written.
    #[error("data dir {path}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Identity file problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The identity key cannot sign events (not ed25519).
    #[error("the node's identity key cannot sign events: {0}")]
    Key(tidings_ipld_schema::Error),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// libp2p could not start (bad listen or bootstrap address).
    #[error(transparent)]
    Net(#[from] NetError),
    /// The API address cannot be bound.
    #[error("cannot serve the API on {addr}{}", in_use_hint(source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A libp2p listen port is held by another process (perhaps another node).
    #[error(
        "cannot listen on {addr}: the port is already in use (another tidings node?); \
         give this node its own --listen port, or /tcp/0 for any free one"
    )]
    ListenInUse {
        /// The listen address.
        addr: libp2p::Multiaddr,
    },
    /// A `--cors-origin` is not an origin.
    #[error(transparent)]
    Cors(#[from] crate::api::CorsError),
    /// `--ipfs-api` is not an address the RPC client can use.
    #[error("--ipfs-api: {0}")]
    IpfsApi(String),
    /// A non-loopback API without a token would let anyone publish as this node.
    #[error(
        "the API address {0} is not loopback: set a bearer token with --token or TIDINGS_TOKEN"
    )]
    TokenRequired(SocketAddr),
    /// `--token` (or `TIDINGS_TOKEN`) was given but is empty or blank.
    #[error("the bearer token given with --token or TIDINGS_TOKEN is empty: set a non-blank one")]
    EmptyToken,
}

/// What to add to a bind error: how to fix an address in use.
fn in_use_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        ": another program (another tidings node?) uses it; choose another with --api HOST:PORT, \
         or port 0 for any free one"
    } else {
        ""
    }
}

/// A running node. Drop it or call [`Node::shutdown`] to stop.
pub struct Node {
    addr: SocketAddr,
    peer_id: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    /// Swarm, inbound dispatch and lease maintenance: aborted at shutdown.
    background: Vec<JoinHandle<()>>,
    /// Live subscriptions, closed at shutdown: their streams would hold the API open.
    local: Arc<LocalSubs>,
    /// Counts the subscribers' connections still open, which shutdown waits for.
    metrics: Arc<Metrics>,
}

impl Node {
    /// Opens the data dir and store, binds the API and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        if config.net.listen.is_empty() {
            return Err(NodeError::Net(NetError::Config(
                "at least one --listen address is needed".into(),
            )));
        }
        // A blank token would make `Authorization: Bearer ` a valid credential: as good as none.
        if config.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(NodeError::EmptyToken);
        }
        if !config.api.ip().is_loopback() && config.token.is_none() {
            return Err(NodeError::TokenRequired(config.api));
        }
        let ipfs = match &config.ipfs_api {
            Some(url) => Some(Arc::new(
                crate::ipfs::Ipfs::new(url).map_err(NodeError::IpfsApi)?,
            )),
            None => None,
        };
        // The API port first, then libp2p's: a taken port is refused before anything starts.
        let listener = tokio::net::TcpListener::bind(config.api)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.api,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.api,
            source,
        })?;
        check_listen_ports(&config.net.listen)?;
        let dir = config.data_dir.clone();
        let dir_err = |source| NodeError::DataDir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dir_err)?;
        let keypair = identity::load_or_create(&dir)?;
        let peer_id = keypair.public().to_peer_id().to_string();
        let store_path = dir.join(STORE_FILE);
        let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
            .await
            .map_err(|e| dir_err(std::io::Error::other(e.to_string())))??;
        let store = Arc::new(store);
        let metrics = Arc::new(Metrics::default());
        let (network, inbound_rx, swarm_task) = net::start(keypair.clone(), config.net.clone())?;
        if let Some(ipfs) = &ipfs {
            network.set_ipfs(ipfs.clone());
        }
        // `api.addr` means the node is up: by then `/v1/status` lists where it listens, which
        // others bootstrap from (devnet, tests).
        if !config.net.listen.is_empty() && !network.wait_listening(LISTEN_WAIT).await {
            tracing::warn!(waited = ?LISTEN_WAIT, "no listen address reported yet; /v1/status lists none until one is");
        }
        let signer = tidings_ipld_schema::Signer::new(&keypair).map_err(NodeError::Key)?;
        let router = Arc::new(Router::new(
            store.clone(),
            signer,
            metrics.clone(),
            network.clone(),
            config.history,
        ));
        let mut background = vec![
            swarm_task,
            tokio::spawn(crate::history::serve::serve(network, store.clone())),
            tokio::spawn(inbound::serve(router.clone(), inbound_rx)),
            tokio::spawn(router.clone().maintain()),
            tokio::spawn(router.clone().maintain_history()),
            tokio::spawn(router.clone().deliver_here()),
            tokio::spawn(router.clone().retry_held()),
            tokio::spawn(router.clone().route_queued()),
            tokio::spawn(router.clone().sync_replicas(config.history.sync_interval)),
        ];
        if let Some(ipfs) = ipfs {
            background.push(tokio::spawn(crate::ipfs::mirror::run(ipfs, store.clone())));
        }

        write_api_addr(&dir, addr).map_err(dir_err)?;

        let local = router.local().clone();
        let state = AppState {
            router,
            metrics: metrics.clone(),
            info: Arc::new(NodeInfo {
                peer_id: peer_id.clone(),
                api: addr,
            }),
            sent: Arc::default(),
        };
        let app = api::with_cors(
            api::routes(state, config.token.clone()),
            &config.cors_origins,
        )?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // Small writes (an SSE event, a publish answer) go out at once: with Nagle on, each
            // waited for the client's delayed ACK, up to 40 ms.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set on an API connection");
                }
            });
            // Routes made ready once, here, and each connection given a clone of the router
            // (a reference count): serving a bare `Router` rebuilds its route table for every
            // connection, about 9 KB held for the connection's life (a fifth of an SSE
            // subscriber's memory).
            let app = app.with_state::<()>(()).into_make_service();
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%peer_id, role = %config.net.role, api = %format!("http://{addr}"), data = %config.data_dir.display(), "node started");
        Ok(Node {
            addr,
            peer_id,
            stop: Some(stop),
            server,
            background,
            local,
            metrics,
        })
    }

    /// The API's bound address.
    pub fn api_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Stops accepting requests, ends every subscription (WebSocket close 1013 or an SSE
    /// `error` event saying why), lets in-flight requests finish, and closes the store.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.local.close_all(SHUTDOWN_REASON);
        let served = match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        // A WebSocket is an upgraded connection the server no longer waits for: give each the
        // moment it needs to send its close frame with the reason, or an embedding program that
        // drops the runtime next resets it without one.
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        while self.metrics.open_subscribers() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        served
    }
}

/// Refuses listen addresses whose TCP or UDP port another process holds. libp2p binds its TCP
/// listeners with `SO_REUSEPORT` (for hole punching), so a second node would share the port
/// silently, each getting some of the connections; a plain bind here, without that option,
/// fails while anyone listens there. Port 0 and non-IP addresses are left to libp2p.
fn check_listen_ports(listen: &[libp2p::Multiaddr]) -> Result<(), NodeError> {
    use libp2p::multiaddr::Protocol;
    for addr in listen {
        let mut ip = None;
        let mut port = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(p) => port = Some((p, true)),
                Protocol::Udp(p) => port = Some((p, false)),
                _ => {}
            }
        }
        let (Some(ip), Some((port, tcp))) = (ip, port) else {
            continue;
        };
        if port == 0 {
            continue;
        }
        let sock = SocketAddr::new(ip, port);
        let taken = if tcp {
            std::net::TcpListener::bind(sock).err()
        } else {
            std::net::UdpSocket::bind(sock).err()
        };
        if taken.is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse) {
            return Err(NodeError::ListenInUse { addr: addr.clone() });
        }
    }
    Ok(())
}

/// Writes `api.addr` atomically so a reader never sees half an address.
fn write_api_addr(dir: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = dir.join(format!("{API_ADDR_FILE}.tmp"));
    std::fs::write(&tmp, format!("http://{addr}\n"))?;
    std::fs::rename(tmp, dir.join(API_ADDR_FILE))
}
