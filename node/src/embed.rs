//! Running a whole node inside another program (the Python binding, tests, applications that
//! want no separate server): [`EmbeddedNode`] starts a [`Node`] on a tokio runtime of its own,
//! so the host needs no async runtime and its own threads never run node work.
//!
//! ```no_run
//! use tidings_node::NodeConfig;
//! use tidings_node::embed::EmbeddedNode;
//!
//! let mut node = EmbeddedNode::start(NodeConfig::new("./my-data"), 2)?;
//! println!("API at {}", node.api_url()); // talk to it with any client, e.g. tidings_node::client
//! node.stop()?;                          // or drop it
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::history::HistoryConfig;
use crate::net::rendezvous::DEFAULT_REPLICATION;
use crate::net::{NetConfig, Role};
use crate::node::{Node, NodeConfig, NodeError};

/// How long [`EmbeddedNode::stop`] lets the runtime's remaining tasks (blocking store work
/// among them) finish before it is torn down.
const RUNTIME_GRACE: Duration = Duration::from_secs(5);

impl NodeConfig {
    /// A broker with its data in `data_dir` that is reachable from this machine only: the API on
    /// `127.0.0.1` and libp2p on `/ip4/127.0.0.1/tcp/…`, both on ports the OS picks (read them
    /// back from [`EmbeddedNode::api_url`] and `/v1/status`), replication and history settings
    /// as `tidings node`'s defaults, no token. Change the public fields to open it up: another
    /// `net.listen` address to be reachable by other machines, `net.bootstrap` to join a
    /// network, `token` for an API beyond loopback.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            api: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token: None,
            net: NetConfig {
                listen: vec![
                    Multiaddr::empty()
                        .with(Protocol::Ip4(Ipv4Addr::LOCALHOST))
                        .with(Protocol::Tcp(0)),
                ],
                bootstrap: Vec::new(),
                role: Role::Broker,
                replication: DEFAULT_REPLICATION,
                request_rate: crate::net::limits::DEFAULT_RATE,
            },
            history: HistoryConfig::default(),
            cors_origins: Vec::new(),
            ipfs_api: None,
        }
    }
}

/// Why an embedded node could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The node itself refused to start (data dir, identity, store, addresses, token).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Its runtime could not be built (threads).
    #[error("cannot start the node's runtime: {0}")]
    Runtime(std::io::Error),
    /// Called from inside a tokio runtime, where blocking on another would panic: use
    /// [`Node::start`] there instead.
    #[error(
        "EmbeddedNode::start was called from inside a tokio runtime; use Node::start there instead"
    )]
    InsideRuntime,
}

/// A node running on its own runtime threads inside this process. [`EmbeddedNode::stop`] or
/// dropping it shuts the node down cleanly (subscriptions are told why, in-flight requests
/// finish, the store is closed) and joins its threads, so the same data dir can be opened again
/// straight away.
pub struct EmbeddedNode {
    runtime: Option<tokio::runtime::Runtime>,
    node: Option<Node>,
    api: SocketAddr,
    peer_id: String,
}

impl EmbeddedNode {
    /// Starts a node with `config` on a new multi-threaded runtime of `threads` worker threads
    /// (at least 1; named `tidings-node`). Blocks until the API is bound and the swarm listens,
    /// as `tidings node` does before it prints its address.
    pub fn start(config: NodeConfig, threads: usize) -> Result<EmbeddedNode, EmbedError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(EmbedError::InsideRuntime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("tidings-node")
            .enable_all()
            .build()
            .map_err(EmbedError::Runtime)?;
        let node = match runtime.block_on(Node::start(config)) {
            Ok(node) => node,
            Err(e) => {
                // Tasks started before the failure (the swarm) must not outlive the attempt.
                runtime.shutdown_timeout(RUNTIME_GRACE);
                return Err(e.into());
            }
        };
        Ok(EmbeddedNode {
            api: node.api_addr(),
            peer_id: node.peer_id().to_string(),
            node: Some(node),
            runtime: Some(runtime),
        })
    }

    /// The API's bound address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// The API's URL, e.g. `http://127.0.0.1:41234`, for [`crate::client::Client::new`].
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The node's libp2p peer id (its events' author).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Whether [`EmbeddedNode::stop`] has run.
    pub fn is_stopped(&self) -> bool {
        self.runtime.is_none()
    }

    /// Shuts the node down and joins its threads; a second call does nothing. Blocks for as
    /// long as in-flight requests take (subscriptions are ended, not waited for).
    pub fn stop(&mut self) -> std::io::Result<()> {
        let Some(runtime) = self.runtime.take() else {
            return Ok(());
        };
        let node = self.node.take();
        let shut = move || {
            let result = match node {
                Some(node) => runtime.block_on(node.shutdown()),
                None => Ok(()),
            };
            // Aborted tasks are dropped here, and with them the last handles on the store: the
            // database file is closed when this returns.
            runtime.shutdown_timeout(RUNTIME_GRACE);
            result
        };
        // Blocking on (or dropping) a runtime inside another one panics: from async code (a
        // node dropped in a tokio task), the shutdown runs on a thread of its own.
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::spawn(shut)
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("node shutdown panicked")))
        } else {
            shut()
        };
        tracing::info!(peer_id = %self.peer_id, "embedded node stopped");
        result
    }
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "embedded node did not stop cleanly");
        }
    }
}

impl std::fmt::Debug for EmbeddedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedNode")
            .field("api", &self.api)
            .field("peer_id", &self.peer_id)
            .field("stopped", &self.is_stopped())
            .finish()
    }
}
