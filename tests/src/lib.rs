//! Helpers for tests that run real `tidings` node processes on loopback.
//!
//! The binary is `$TIDINGS_BIN` if set, else `tidings` next to the test executable's profile
//! dir (`target/<profile>/tidings`), which `cargo test --workspace` builds because the node
//! crate has integration tests.

pub mod cdp;
pub mod oracle;
pub mod workloads;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// Path of the `tidings` binary under test.
pub fn tidings_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDINGS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test>-<hash> → target/<profile>/tidings
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    profile_dir.join(format!("tidings{}", std::env::consts::EXE_SUFFIX))
}

/// Whether `bin` was built with the `test-faults` feature (its `--version` says so).
pub fn has_test_faults(bin: &Path) -> Result<bool> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    ensure!(out.status.success(), "{} --version failed", bin.display());
    Ok(String::from_utf8_lossy(&out.stdout).contains("(test-faults)"))
}

/// Holds off the other heavy tests of the same test binary while the guard lives. Cargo runs a
/// binary's tests in parallel threads (one per core by default); a test that starts three or
/// more node processes takes this first, so two such tests never run at once (on the 2-core CI
/// machine two of them put 8 nodes under their fixed deadlines together). A test that failed
/// while holding it does not stop the others.
pub fn one_heavy_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `tidings node` child process with its API on an OS-chosen loopback port.
pub struct NodeProcess {
    child: Child,
    /// Base URL of its API, e.g. `http://127.0.0.1:41234`.
    pub api: String,
    /// Its data dir.
    pub data: PathBuf,
}

impl NodeProcess {
    /// Starts a node on `data` and waits (up to 30 s) until its API answers `/v1/status`.
    pub fn start(data: &Path, extra_args: &[&str]) -> Result<NodeProcess> {
        Self::start_with_env(data, extra_args, &[])
    }

    /// [`NodeProcess::start`] with extra environment variables (test-only fault switches).
    pub fn start_with_env(
        data: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<NodeProcess> {
        Self::spawn(data, "127.0.0.1:0", None, extra_args, env)
    }

    /// Like [`NodeProcess::start`] with the API on `api` (`HOST:PORT`, port 0 for an OS-chosen
    /// one) and, if given, `--token`, which the readiness poll then sends. `api` is the
    /// address it listens on; [`NodeProcess::api`] is always a loopback URL, so a test only ever
    /// talks to this machine even when the node listens on `0.0.0.0`.
    pub fn start_with_api(
        data: &Path,
        api: &str,
        token: Option<&str>,
        extra_args: &[&str],
    ) -> Result<NodeProcess> {
        Self::spawn(data, api, token, extra_args, &[])
    }

    fn spawn(
        data: &Path,
        api: &str,
        token: Option<&str>,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<NodeProcess> {
        let bin = tidings_bin();
        if !bin.exists() {
            bail!(
                "{} not found: build it with `cargo build -p tidings-node --features test-faults` \
                 or set TIDINGS_BIN",
                bin.display()
            );
        }
        // A build without the switches ignores them, and a test relying on one would pass
        // for the wrong reason or fail for one that is hard to see.
        if env.iter().any(|(k, _)| k.starts_with("TIDINGS_TEST_")) {
            ensure!(
                has_test_faults(&bin)?,
                "{} was built without the `test-faults` feature, so it ignores the test-only \
                 switches this test sets: build it with `cargo build -p tidings-node --features \
                 test-faults` (`cargo test --workspace` does)",
                bin.display()
            );
        }
        std::fs::create_dir_all(data)?;
        let addr_file = data.join("api.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("node.log"))?;
        let child = Command::new(&bin)
            .arg("node")
            .arg("--data")
            .arg(data)
            .args(["--api", api])
            .args(token.map(|t| ["--token", t]).iter().flatten())
            .args(if extra_args.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "/ip4/127.0.0.1/tcp/0"][..]
            })
            .args(extra_args)
            // More of a failing run's story on demand; the tests read info-level lines.
            .env(
                "RUST_LOG",
                std::env::var("TIDINGS_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("TIDINGS_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut node = NodeProcess {
            child,
            api: String::new(),
            data: data.to_path_buf(),
        };
        let http = reqwest::blocking::Client::new();
        let api = poll(Duration::from_secs(30), || {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Some(Err(status));
            }
            let api = std::fs::read_to_string(&addr_file).ok()?;
            let api = api.trim().replace("://0.0.0.0:", "://127.0.0.1:");
            let mut req = http.get(format!("{api}/v1/status"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let ok = req.send().ok()?.status().is_success();
            ok.then_some(Ok(api))
        });
        match api {
            Some(Ok(api)) => {
                node.api = api;
                Ok(node)
            }
            Some(Err(status)) => bail!("node exited with {status} during start:\n{}", node.log()),
            None => bail!("node did not answer within 30 s:\n{}", node.log()),
        }
    }

    /// The node's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("node.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown path runs, exactly like a crash or power cut of the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `sig` (SIGTERM, SIGHUP: a clean stop) and waits up to `timeout` for the node to
    /// exit; its exit status.
    pub fn stop_with(
        &mut self,
        sig: libc::c_int,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus> {
        signal_and_wait(&mut self.child, sig, timeout)
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the node exited, if it has (a node that should be running and is not).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `sig` to the node and returns at once (SIGSTOP and SIGCONT pause and resume it,
    /// as a long GC pause or a stalled disk would).
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child, which is not reaped while `self` lives.
        ensure!(
            unsafe { libc::kill(pid, sig) } == 0,
            "kill({pid}, {sig}) failed"
        );
        Ok(())
    }

    /// This node's first libp2p listen address (`.../p2p/<id>`), for `--bootstrap`.
    pub fn p2p_addr(&self) -> Result<String> {
        let (_, s) = self.api().get_json("/v1/status")?;
        s["listen"][0]
            .as_str()
            .map(str::to_string)
            .context("node reports no listen address")
    }

    /// The node's peer id, as its status reports it.
    pub fn peer_id(&self) -> Result<libp2p::PeerId> {
        Ok(self.status()?["peer_id"]
            .as_str()
            .context("peer_id")?
            .parse()?)
    }

    /// The node's `/v1/status`.
    pub fn status(&self) -> Result<Value> {
        let (code, s) = self.api().get_json("/v1/status")?;
        ensure!(code == 200, "status answered {code}");
        Ok(s)
    }

    /// A blocking API client for this node.
    pub fn api(&self) -> Api {
        Api::new(&self.api)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` to `child` and waits up to `timeout` for it to exit; its exit status.
pub fn signal_and_wait(
    child: &mut Child,
    sig: libc::c_int,
    timeout: Duration,
) -> Result<std::process::ExitStatus> {
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    ensure!(
        unsafe { libc::kill(pid, sig) } == 0,
        "kill({pid}, {sig}) failed"
    );
    poll(timeout, || child.try_wait().ok().flatten())
        .with_context(|| format!("process did not exit within {timeout:?} of signal {sig}"))
}

/// A small blocking client of the HTTP API for tests.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
}

impl Api {
    /// A client for the API at `base`.
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_else(|_| reqwest::blocking::Client::new()),
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Api {
        self.token = Some(token.to_string());
        self
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request builder for `method path`, with the token if one is set, for requests the
    /// helpers below do not cover (hostile ones included).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The value of the series `name` (with its labels, if any) in `GET /metrics`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let text = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|v| v as u64)
    }

    /// `POST /v1/publish`; `Ok((status, json))` whatever the status.
    pub fn publish(&self, topic: &str, body: &Value) -> Result<(u16, Value)> {
        let r = self
            .request(reqwest::Method::POST, "/v1/publish")
            .json(&serde_json::json!({"topic": topic, "body": body}))
            .send()?;
        let status = r.status().as_u16();
        Ok((status, r.json()?))
    }

    /// `POST path` with raw bytes (a CAR file), returning status and JSON.
    pub fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<(u16, Value)> {
        let r = self
            .request(reqwest::Method::POST, path)
            .timeout(Duration::from_secs(300))
            .body(bytes)
            .send()?;
        let status = r.status().as_u16();
        Ok((status, r.json()?))
    }

    /// `GET path`, returning status and JSON.
    pub fn get_json(&self, path: &str) -> Result<(u16, Value)> {
        let r = self.request(reqwest::Method::GET, path).send()?;
        let status = r.status().as_u16();
        Ok((status, r.json()?))
    }

    /// `GET /v1/events/{cid}` that must succeed.
    pub fn event(&self, cid: &str) -> Result<Value> {
        let (s, v) = self.get_json(&format!("/v1/events/{cid}"))?;
        if s != 200 {
            bail!("GET /v1/events/{cid}: {s} {v}");
        }
        Ok(v)
    }

    /// `GET /v1/heads?topic=` that must succeed.
    pub fn heads(&self, topic: &str) -> Result<Vec<String>> {
        let r = self
            .request(reqwest::Method::GET, "/v1/heads")
            .query(&[("topic", topic)])
            .send()?;
        let v: Value = r.json()?;
        Ok(v["heads"]
            .as_array()
            .context("heads missing")?
            .iter()
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect())
    }
}

/// A WebSocket subscription on a node's API.
pub type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket subscription to `filter` as durable `durable` on the API at `api`, whose
/// reads time out after `read_timeout`.
pub fn ws_durable(api: &str, filter: &str, durable: &str, read_timeout: Duration) -> Result<Ws> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", api.replace("http://", "ws://")),
        &[("filter", filter), ("durable", durable)],
    )?;
    let (mut ws, _) = tungstenite::connect(url.as_str()).context("websocket connect")?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(read_timeout))?;
    }
    Ok(ws)
}

/// A plain HTTP/1.1 SSE client on a raw socket, so the test can cut the connection itself.
/// Returns the socket (to shut down) and the `data:` lines; fails unless the answer is 200.
pub fn sse_subscribe(url: &reqwest::Url) -> Result<(TcpStream, mpsc::Receiver<String>)> {
    sse_subscribe_with(url, None)
}

/// [`sse_subscribe`] sending `Authorization: Bearer <token>` if given.
pub fn sse_subscribe_with(
    url: &reqwest::Url,
    token: Option<&str>,
) -> Result<(TcpStream, mpsc::Receiver<String>)> {
    let addr = format!(
        "{}:{}",
        url.host_str().context("host")?,
        url.port().context("port")?
    );
    let mut stream = TcpStream::connect(addr)?;
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: tidings\r\nAccept: text/event-stream\r\n{auth}\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    ensure!(
        status.starts_with("HTTP/1.1 200"),
        "SSE subscribe: {status}"
    );
    let mut chunked = false;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        chunked |= h
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
    }
    ensure!(chunked, "SSE answer is not chunked");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // De-chunk, then split the SSE text into lines.
        let mut text = Vec::new();
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            let mut chunk = vec![0; n + 2];
            if n == 0 || reader.read_exact(&mut chunk).is_err() {
                break;
            }
            text.extend_from_slice(&chunk[..n]);
            while let Some(nl) = text.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = text.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(d) = line.trim_end().strip_prefix("data:")
                    && tx.send(d.trim_start().to_string()).is_err()
                {
                    return;
                }
            }
        }
    });
    Ok((stream, rx))
}

/// One Server-Sent Event: its `id` (the event's CID), `event` type (empty for a plain event)
/// and `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The `id:` field.
    pub id: String,
    /// The `event:` field (`error` when the node ends the stream).
    pub event: String,
    /// The `data:` field.
    pub data: String,
}

/// Like [`sse_subscribe`], sending `headers` with the request (`Last-Event-ID`, `Origin`), and
/// giving whole events (id, type, data) rather than data lines.
pub fn sse_frames(
    url: &reqwest::Url,
    headers: &[(&str, &str)],
) -> Result<(TcpStream, mpsc::Receiver<SseFrame>)> {
    let addr = format!(
        "{}:{}",
        url.host_str().context("host")?,
        url.port().context("port")?
    );
    let mut stream = TcpStream::connect(addr)?;
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: tidings\r\nAccept: text/event-stream\r\n\
         Connection: close\r\n{extra}\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        // The error body, for the message.
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        bail!("SSE subscribe: {} {rest}", status.trim());
    }
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut frames = SseReader::new(reader);
        while let Some(f) = frames.next_frame() {
            if tx.send(f).is_err() {
                return;
            }
        }
    });
    Ok((stream, rx))
}

/// Reads Server-Sent Events one at a time from a chunked `text/event-stream` body (`reader` is
/// positioned just after the response headers). It reads the socket only when asked for the
/// next event, so a test can stop reading (a stalled subscriber) and go on later.
pub struct SseReader<R> {
    reader: R,
    /// Text of the current chunk not yet split into lines.
    text: Vec<u8>,
    frame: SseFrame,
}

impl<R: BufRead> SseReader<R> {
    /// A reader of the body that `reader` is at the start of.
    pub fn new(reader: R) -> SseReader<R> {
        SseReader {
            reader,
            text: Vec::new(),
            frame: SseFrame {
                id: String::new(),
                event: String::new(),
                data: String::new(),
            },
        }
    }

    /// The next event (comments and keep-alives skipped), or `None` once the body has ended
    /// (its last chunk, or the connection).
    pub fn next_frame(&mut self) -> Option<SseFrame> {
        loop {
            while let Some(nl) = self.text.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.text.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !self.frame.data.is_empty() || !self.frame.event.is_empty() {
                        let empty = SseFrame {
                            id: String::new(),
                            event: String::new(),
                            data: String::new(),
                        };
                        return Some(std::mem::replace(&mut self.frame, empty));
                    }
                } else if let Some(v) = line.strip_prefix("id:") {
                    self.frame.id = v.trim_start().to_string();
                } else if let Some(v) = line.strip_prefix("event:") {
                    self.frame.event = v.trim_start().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    self.frame.data = v.trim_start().to_string();
                }
            }
            let mut size = String::new();
            if self.reader.read_line(&mut size).unwrap_or(0) == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            if n == 0 || self.reader.read_exact(&mut chunk).is_err() {
                return None;
            }
            self.text.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Runs `tidings ARGS` to the end; (exit success, stdout, stderr).
pub fn tidings(args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(tidings_bin())
        .args(args)
        .env_remove("TIDINGS_API")
        .env_remove("TIDINGS_TOKEN")
        .stdin(Stdio::null())
        .output()
        .context("running tidings")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The lines of `r` (a child's stdout), read on their own thread, as a channel that closes at
/// end of input.
pub fn line_channel(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects `want` event CIDs from a line-oriented source, or fails at the deadline.
pub fn collect(rx: &mpsc::Receiver<String>, want: usize, who: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("{who}: got {} of {want} events", got.len()))?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("{who}: bad line {line}"))?;
        got.push(v["cid"].as_str().context("cid")?.to_string());
    }
    Ok(got)
}

/// Collects event CIDs until every one of `sentinels` has arrived (or fails at the deadline);
/// returns the others, in arrival order. A test publishes its sentinels after its last event,
/// each on a stream (author and topic) whose events it follows, so anything extra or duplicate
/// that was coming has come by then: delivery keeps each stream's order. No silence is taken
/// for success, whatever the machine's speed.
pub fn collect_until(
    rx: &mpsc::Receiver<String>,
    sentinels: &[String],
    who: &str,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waiting: std::collections::HashSet<&String> = sentinels.iter().collect();
    let mut got = Vec::new();
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).with_context(|| {
            format!(
                "{who}: {} of {} sentinels never came (after {} events)",
                waiting.len(),
                sentinels.len(),
                got.len()
            )
        })?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("{who}: bad line {line}"))?;
        let cid = v["cid"].as_str().context("cid")?.to_string();
        if !waiting.remove(&cid) {
            ensure!(
                !sentinels.contains(&cid),
                "{who}: sentinel {cid} delivered twice"
            );
            got.push(cid);
        }
    }
    Ok(got)
}

/// A single-author stream of `n` signed events on `topic` (author key from `seed`), as a CAR
/// file with the head as root, plus every CID oldest first. Signed here, so a test can hand a
/// node a long history in one import instead of `n` publishes.
pub fn signed_stream_car(seed: u8, topic: &str, n: u64) -> Result<(Vec<u8>, Vec<String>)> {
    use tidings_ipld_schema::{Event, Keypair, car, json};
    let key = Keypair::ed25519_from_bytes([seed; 32]).context("key")?;
    let mut blocks = Vec::with_capacity(n as usize);
    let mut prev = vec![];
    for seq in 1..=n {
        let body = json::json_to_ipld(&serde_json::json!({
            "symbol": "CTT", "order": if seq % 2 == 0 { "buy" } else { "sell" },
            "number": seq % 1000, "price": (seq % 2000) as f64 / 100.0, "exchange": "Euronext Lisboa",
        }))?;
        let (_, block) = Event::sign_block(&key, topic, body, seq, 1_763_700_000_000 + seq, prev)?;
        prev = vec![block.cid];
        blocks.push(block);
    }
    let cids: Vec<String> = blocks.iter().map(|b| b.cid.to_string()).collect();
    let head = blocks.last().map(|b| b.cid).into_iter().collect::<Vec<_>>();
    let mut out = Vec::new();
    car::write_car(
        &mut out,
        &head,
        blocks.into_iter().rev().map(|b| (b.cid, b.data)),
    )?;
    Ok((out, cids))
}

/// Walks a topic's stream from its single head back to seq 1; returns CIDs newest first.
pub fn chain(api: &Api, topic: &str) -> Result<Vec<String>> {
    let heads = api.heads(topic)?;
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    ensure!(
        heads.len() == 1,
        "{topic}: one writer must give one head, got {heads:?}"
    );
    let mut out = Vec::new();
    let mut cur = heads[0].clone();
    let mut expect_seq: Option<u64> = None;
    loop {
        let e = api.event(&cur)?;
        ensure!(
            e["topic"] == topic,
            "{cur}: topic {} in {topic}'s chain",
            e["topic"]
        );
        let seq = e["seq"].as_u64().context("seq")?;
        if let Some(s) = expect_seq {
            ensure!(
                seq == s,
                "{topic}: seq {seq} where {s} was expected (gap or fork)"
            );
        }
        out.push(cur.clone());
        let prev = e["prev"].as_array().context("prev")?;
        if seq == 1 {
            ensure!(prev.is_empty(), "{topic}: first event has prev {prev:?}");
            break;
        }
        ensure!(
            prev.len() == 1,
            "{topic}: seq {seq} must link exactly its predecessor, got {prev:?}"
        );
        cur = prev[0].as_str().context("prev cid")?.to_string();
        expect_seq = Some(seq - 1);
    }
    Ok(out)
}

/// Starts `brokers` brokers and `peers` peer-role nodes joined through the first broker, and
/// waits until every node knows every broker.
pub fn network(dir: &Path, brokers: usize, peers: usize, k: usize) -> Result<Vec<NodeProcess>> {
    network_with(dir, brokers, peers, k, &[], |_| Vec::new())
}

/// [`network`] with `extra_args` for every node and `env(name)` for the node named `name`
/// (`b0`, `b1`, ... then `p0`, ...; also its directory under `dir`).
pub fn network_with(
    dir: &Path,
    brokers: usize,
    peers: usize,
    k: usize,
    extra_args: &[&str],
    env: impl Fn(&str) -> Vec<(String, String)>,
) -> Result<Vec<NodeProcess>> {
    let k = k.to_string();
    let start = |name: &str, args: &[&str]| {
        let vars = env(name);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut all = vec!["--replication", k.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(extra_args);
        NodeProcess::start_with_env(&dir.join(name), &all, &vars)
    };
    let first = start("b0", &[])?;
    let boot = first.p2p_addr()?;
    let mut nodes = vec![first];
    for i in 1..brokers {
        nodes.push(start(&format!("b{i}"), &["--bootstrap", &boot])?);
    }
    for i in 0..peers {
        nodes.push(start(
            &format!("p{i}"),
            &["--bootstrap", &boot, "--role", "peer"],
        )?);
    }
    for n in &nodes {
        poll(Duration::from_secs(60), || {
            (n.status().ok()?["brokers"].as_u64()? == brokers as u64).then_some(())
        })
        .with_context(|| {
            format!(
                "{} never learned all {brokers} brokers: {:?}",
                n.api,
                n.status().ok()
            )
        })?;
    }
    Ok(nodes)
}

/// Waits until the nodes hold `want` subscription leases in all.
pub fn wait_leases(nodes: &[NodeProcess], want: usize) -> Result<()> {
    poll(Duration::from_secs(30), || {
        let total: u64 = nodes
            .iter()
            .filter_map(|n| n.status().ok()?["leases"].as_u64())
            .sum();
        (total == want as u64).then_some(())
    })
    .with_context(|| format!("leases never all placed ({want} wanted)"))
}
