//! tidings: `tidings node` broker processes on loopback, publishing over HTTP or the
//! WebSocket publish stream, SSE subscriptions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::Started;
use crate::harness::{Publisher, Recorder, Subscribers};
use crate::orders::{Order, TIDINGS_FILTER};
use crate::procs::{Proc, poll_until, tidings_bin};
use crate::proxy;

/// A `tidings node` child process.
pub struct Node {
    proc: Proc,
    pub api: String,
}

impl Node {
    /// Starts a broker with its data in `data`, API and libp2p on OS-chosen loopback ports,
    /// joining through `boot` if given; returns once its API answers.
    pub async fn start(
        http: &reqwest::Client,
        bin: &Path,
        data: &Path,
        boot: Option<&str>,
    ) -> Result<Node> {
        std::fs::create_dir_all(data)?;
        let mut cmd = Command::new(bin);
        cmd.arg("node").arg("--data").arg(data).args([
            "--api",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ]);
        if let Some(b) = boot {
            cmd.args(["--bootstrap", b]);
        }
        cmd.env("RUST_LOG", "warn");
        let mut proc = Proc::spawn(cmd, &data.join("node.log"))?;
        let addr_file = data.join("api.addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            proc.check_running().context("tidings node during start")?;
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                let api = a.trim().to_string();
                if !api.is_empty()
                    && http
                        .get(format!("{api}/v1/status"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                {
                    return Ok(Node { proc, api });
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "tidings node did not answer within 30 s:\n{}",
                    proc.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node's process id (its memory and CPU time are read from /proc).
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    pub async fn status(&self, http: &reqwest::Client) -> Result<Value> {
        let r = http.get(format!("{}/v1/status", self.api)).send().await?;
        ensure!(r.status().is_success(), "status answered {}", r.status());
        Ok(r.json().await?)
    }
}

/// `n` broker processes joined through the first, then their temp dir (fields drop in order:
/// processes die first).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` brokers; with more than one, returns once every node knows all `n` brokers.
    pub async fn start(http: &reqwest::Client, n: usize, parent: Option<&Path>) -> Result<Cluster> {
        let bin = tidings_bin()?;
        let mut b = tempfile::Builder::new();
        b.prefix("tidings-bench");
        let dir = match parent {
            Some(p) => b.tempdir_in(p)?,
            None => b.tempdir()?,
        };
        let root: PathBuf = dir.path().to_path_buf();
        let mut c = Cluster {
            nodes: Vec::new(),
            dir,
        };
        c.nodes
            .push(Node::start(http, &bin, &root.join("n0"), None).await?);
        if n > 1 {
            let boot = c.nodes[0].status(http).await?["listen"][0]
                .as_str()
                .context("node 0 reports no listen address")?
                .to_string();
            for k in 1..n {
                c.nodes
                    .push(Node::start(http, &bin, &root.join(format!("n{k}")), Some(&boot)).await?);
            }
            for node in &c.nodes {
                poll_until(Duration::from_secs(60), "all brokers known", || async {
                    (node.status(http).await.ok()?["brokers"].as_u64()? == n as u64).then_some(())
                })
                .await
                .with_context(|| node.log())?;
            }
        }
        Ok(c)
    }

    /// Waits until the nodes together hold at least `want` subscription leases.
    pub async fn await_leases(&self, http: &reqwest::Client, want: u64) -> Result<()> {
        let nodes = &self.nodes;
        poll_until(
            Duration::from_secs(30),
            "the subscriptions' leases",
            || async {
                let mut total = 0;
                for n in nodes {
                    total += n.status(http).await.ok()?["leases"].as_u64()?;
                }
                (total >= want).then_some(())
            },
        )
        .await
    }
}

/// `POST /v1/publish`: returns once the node acknowledged, i.e. a majority of the root's
/// rendezvous set holds the event durably.
#[derive(Clone)]
pub struct HttpPublisher {
    pub http: reqwest::Client,
    pub url: Arc<str>,
}

impl Publisher for HttpPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        // The body goes in as the very same JSON bytes the other systems carry.
        let req = format!(r#"{{"topic":{},"body":{}}}"#, json!(o.topic), o.body);
        let r = self
            .http
            .post(&*self.url)
            .header("content-type", "application/json")
            .body(req)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            bail!(
                "publish {}: {status} {}",
                o.topic,
                r.text().await.unwrap_or_default()
            );
        }
        // Consume the ack so the connection is reused.
        r.bytes().await?;
        Ok(())
    }
}

/// How the bench publishes to tidings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishVia {
    /// `POST /v1/publish`, one request per event, a keep-alive connection per lane.
    Http,
    /// The WebSocket publish stream (`GET /v1/publish`): one connection, every lane's publish
    /// in flight on it, each answered on acknowledgement (as NATS' client pipelines).
    Stream,
}

impl PublishVia {
    /// The name `--tidings-publish` takes and results files record.
    pub fn name(self) -> &'static str {
        match self {
            PublishVia::Http => "http",
            PublishVia::Stream => "stream",
        }
    }

    /// The inverse of [`PublishVia::name`].
    pub fn from_name(s: &str) -> Option<PublishVia> {
        match s {
            "http" => Some(PublishVia::Http),
            "stream" => Some(PublishVia::Stream),
            _ => None,
        }
    }
}

/// The publish stream as a [`Publisher`]: each call waits for its event's acknowledgement.
#[derive(Clone)]
pub struct StreamPublisher(pub tidings_node::client::PublishStream);

impl Publisher for StreamPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        // The body goes in as the very same JSON bytes the other systems carry.
        self.0
            .publish_json(&o.topic, &o.body)
            .await
            .with_context(|| format!("publish {}", o.topic))?;
        Ok(())
    }
}

/// Whichever way the bench publishes.
#[derive(Clone)]
pub enum TidingsPublisher {
    /// One HTTP request per event.
    Http(HttpPublisher),
    /// The publish stream.
    Stream(StreamPublisher),
}

impl Publisher for TidingsPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        match self {
            TidingsPublisher::Http(p) => p.publish(o).await,
            TidingsPublisher::Stream(p) => p.publish(o).await,
        }
    }
}

/// An HTTP client as the bench uses it: no Nagle, a connection per lane kept alive.
pub fn http_client(lanes: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(lanes.max(4))
        .build()?)
}

/// Reads the SSE stream at `url` until stopped, recording every event's data line.
async fn sse_loop(
    http: reqwest::Client,
    url: String,
    mut rec: Recorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<Recorder> {
    let mut r = match http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            eprintln!("  tidings subscribe: {}", r.status());
            return Some(rec);
        }
        Err(e) => {
            eprintln!("  tidings subscribe: {e}");
            return Some(rec);
        }
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.changed() => break,
            c = r.chunk() => c,
        };
        let Ok(Some(chunk)) = chunk else { break };
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + nl];
            if let Some(data) = line.strip_prefix(b"data:") {
                rec.on_message(data, now);
            }
            start += nl + 1;
        }
        buf.drain(..start);
    }
    Some(rec)
}

/// Starts `n` brokers; publishes on node 0; subscriber `k` subscribes over SSE on node
/// `(n - 1 + k) % n` (the first on the last node, two hops from the publisher's, as in `e2e`),
/// with the content filter in the network when `subs` are filtered.
pub async fn start(
    n: usize,
    lanes: usize,
    via: PublishVia,
    filtered: bool,
    subs: &mut Subscribers,
    work: &Path,
) -> Result<Started<TidingsPublisher>> {
    let http = http_client(lanes)?;
    let cluster = Cluster::start(&http, n, Some(work)).await?;
    let filter = if filtered {
        TIDINGS_FILTER
    } else {
        "/stocks/**"
    };
    let mut proxies = Vec::new();
    let mut handles = Vec::new();
    let recs = subs.take();
    let n_subs = recs.len();
    for (k, rec) in recs.into_iter().enumerate() {
        let node = &cluster.nodes[(n - 1 + k) % n];
        let mut api = node.api.clone();
        if let Some(c) = &subs.bytes {
            let upstream = api
                .trim_start_matches("http://")
                .parse()
                .with_context(|| format!("api address {api}"))?;
            let p = proxy::start(upstream, c.clone()).await?;
            api = format!("http://{}", p.addr);
            proxies.push(p);
        }
        let mut url = reqwest::Url::parse(&format!("{api}/v1/subscribe"))?;
        url.query_pairs_mut().append_pair("filter", filter);
        handles.push(tokio::spawn(sse_loop(
            http_client(1)?,
            url.to_string(),
            rec,
            subs.stop.clone(),
        )));
    }
    // Every member of the rendezvous set (all n brokers, K = 3) holds each subscription's lease.
    cluster.await_leases(&http, (n_subs * n) as u64).await?;
    let publisher = match via {
        PublishVia::Http => TidingsPublisher::Http(HttpPublisher {
            http,
            url: format!("{}/v1/publish", cluster.nodes[0].api).into(),
        }),
        PublishVia::Stream => TidingsPublisher::Stream(StreamPublisher(
            tidings_node::client::Client::new(&cluster.nodes[0].api, None)
                .publish_stream()
                .await?,
        )),
    };
    Ok(Started {
        publisher,
        handles,
        servers: cluster.nodes.iter().map(Node::pid).collect(),
        guard: Box::new((proxies, cluster)),
    })
}
