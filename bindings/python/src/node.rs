//! `tidings.Node`: a whole node inside the Python process (`tidings_node::embed`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, Once};
use std::time::Duration;

use pyo3::prelude::*;
use tidings_node::NodeConfig;
use tidings_node::embed::{EmbedError, EmbeddedNode};
use tidings_node::net::Role;

use crate::client::Client;
use crate::errors::{self, Failure, Kind};

static LOGGING: Once = Once::new();

/// Node logs go to stderr, filtered by `TIDINGS_LOG` (or `RUST_LOG`), `warn` by default, as
/// the `tidings` binary's client commands do.
fn init_logging() {
    LOGGING.call_once(|| {
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_env("TIDINGS_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new("warn"));
        // Another library may have set a subscriber already: then its choice stands.
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .try_init();
    });
}

/// A full tidings node running on its own threads in this process: store, HTTP API, libp2p,
/// rendezvous duty (as a broker). Use it as a context manager, or call `close()`.
///
/// `data_dir` holds its identity and store (a temporary directory, removed at close, when
/// None). `api` is the HTTP API's `HOST:PORT` (default `127.0.0.1:0`, any free port; see
/// `.api`). `listen` are libp2p multiaddrs (default `/ip4/127.0.0.1/tcp/0`: this machine only);
/// `bootstrap` the `MULTIADDR/p2p/PEER_ID` of nodes to join (another node's `.addrs()`).
/// `role` is `"broker"` or `"peer"`; `replication` the rendezvous set size K; `token` the
/// bearer token its API requires; `sync_interval`, `durable_expiry`, `retain_age` are seconds
/// (or `timedelta`); `retain_bytes` bytes; `threads` its runtime's worker threads.
#[pyclass(module = "tidings", frozen)]
pub(crate) struct Node {
    inner: Mutex<Option<EmbeddedNode>>,
    api: String,
    peer_id: String,
    token: Option<String>,
    data_dir: PathBuf,
    temp: Mutex<Option<tempfile::TempDir>>,
}

/// Seconds as a float or a `timedelta`.
fn seconds(name: &str, v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = if v.hasattr("total_seconds")? {
        v.call_method0("total_seconds")?.extract()?
    } else {
        v.extract()
            .map_err(|_| errors::bad_request(format!("{name} must be seconds or a timedelta")))?
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(errors::bad_request(format!(
            "{name} must be more than zero seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn multiaddrs(name: &str, list: Vec<String>) -> PyResult<Vec<libp2p::Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e| errors::bad_request(format!("bad {name} address {a:?}: {e}")))
        })
        .collect()
}

#[pymethods]
impl Node {
    #[new]
    #[pyo3(signature = (
        data_dir=None, api=None, listen=None, bootstrap=Vec::new(), role="broker", replication=3,
        token=None, sync_interval=None, durable_expiry=None, retain_age=None, retain_bytes=None,
        threads=2
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data_dir: Option<PathBuf>,
        api: Option<String>,
        listen: Option<Vec<String>>,
        bootstrap: Vec<String>,
        role: &str,
        replication: usize,
        token: Option<String>,
        sync_interval: Option<Bound<'_, PyAny>>,
        durable_expiry: Option<Bound<'_, PyAny>>,
        retain_age: Option<Bound<'_, PyAny>>,
        retain_bytes: Option<u64>,
        threads: usize,
    ) -> PyResult<Node> {
        init_logging();
        let (dir, temp) = match data_dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("tidings-node-")
                    .tempdir()
                    .map_err(|e| errors::error(format!("cannot make a temporary data dir: {e}")))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut config = NodeConfig::new(&dir);
        if let Some(a) = api {
            config.api = a.parse::<SocketAddr>().map_err(|e| {
                errors::bad_request(format!(
                    "bad api address {a:?} (want HOST:PORT, e.g. 127.0.0.1:0): {e}"
                ))
            })?;
        }
        if let Some(l) = listen {
            config.net.listen = multiaddrs("listen", l)?;
        }
        config.net.bootstrap = multiaddrs("bootstrap", bootstrap)?;
        config.net.role = role.parse::<Role>().map_err(errors::bad_request)?;
        if !(1..=32).contains(&replication) {
            return Err(errors::bad_request("replication must be from 1 to 32"));
        }
        config.net.replication = replication;
        config.token = token.clone();
        if let Some(s) = sync_interval {
            config.history.sync_interval = seconds("sync_interval", &s)?;
        }
        if let Some(s) = durable_expiry {
            config.history.durable_expiry = seconds("durable_expiry", &s)?;
        }
        if let Some(s) = retain_age {
            config.history.retain_age = Some(seconds("retain_age", &s)?);
        }
        config.history.retain_bytes = retain_bytes;
        let node = py
            .detach(move || EmbeddedNode::start(config, threads))
            .map_err(|e| match e {
                EmbedError::Node(tidings_node::NodeError::Bind { .. }) => {
                    Failure::new(Kind::Unavailable, e.to_string()).into_pyerr()
                }
                EmbedError::Node(
                    tidings_node::NodeError::TokenRequired(_)
                    | tidings_node::NodeError::EmptyToken
                    | tidings_node::NodeError::Net(_),
                ) => errors::bad_request(e.to_string()),
                other => errors::error(format!("the node did not start: {other}")),
            })?;
        Ok(Node {
            api: node.api_url(),
            peer_id: node.peer_id().to_string(),
            inner: Mutex::new(Some(node)),
            token,
            data_dir: dir,
            temp: Mutex::new(temp),
        })
    }

    /// The HTTP API's URL, e.g. `http://127.0.0.1:41234`.
    #[getter]
    fn api(&self) -> &str {
        &self.api
    }

    /// The node's libp2p peer id: the author of what it publishes.
    #[getter]
    fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Its data directory.
    #[getter]
    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// Whether it has been closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().map(|n| n.is_none()).unwrap_or(true)
    }

    /// A client of this node's API (with its token).
    fn client(&self) -> Client {
        Client::connect(Some(self.api.clone()), self.token.clone())
    }

    /// The node's status (`GET /v1/status`): peer id, role, listen addresses, peers, store, ...
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.client().status(py)
    }

    /// Where other nodes can join this one: each listen address with `/p2p/<peer id>`, for
    /// their `bootstrap=`.
    fn addrs(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let status = self.status(py)?;
        let listen: Vec<String> = status.get_item("listen")?.extract()?;
        Ok(listen
            .into_iter()
            .map(|a| format!("{a}/p2p/{}", self.peer_id))
            .collect())
    }

    /// Stops the node (subscriptions are told why, in-flight requests finish, the store is
    /// closed) and removes a temporary data dir. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let node = self.inner.lock().ok().and_then(|mut n| n.take());
        if let Some(mut node) = node {
            py.detach(move || node.stop())
                .map_err(|e| errors::error(format!("the node did not stop cleanly: {e}")))?;
        }
        if let Some(t) = self.temp.lock().ok().and_then(|mut t| t.take()) {
            t.close()
                .map_err(|e| errors::error(format!("cannot remove the temporary data dir: {e}")))?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Node(peer_id='{}', api='{}', closed={})",
            self.peer_id,
            self.api,
            self.closed()
        )
    }
}
