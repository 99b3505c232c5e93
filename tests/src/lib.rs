//! Helpers for tests that run real `tidings` node processes on loopback.
//!
//! The binary is `$TIDINGS_BIN` if set, else `tidings` next to the test executable's profile
//! dir (`target/<profile>/tidings`), which `cargo test --workspace` builds because the node
//! crate has integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
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
        let bin = tidings_bin();
        if !bin.exists() {
            bail!(
                "{} not found: build it with `cargo build -p tidings-node` or set TIDINGS_BIN",
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
            .args(["--api", "127.0.0.1:0"])
            .args(if extra_args.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "/ip4/127.0.0.1/tcp/0"][..]
            })
            .args(extra_args)
            .env("RUST_LOG", "info")
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
            let api = api.trim().to_string();
            let ok = http
                .get(format!("{api}/v1/status"))
                .send()
                .ok()?
                .status()
                .is_success();
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

/// A small blocking client of the HTTP API for tests.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::blocking::Client,
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
        }
    }

    /// `POST /v1/publish`; `Ok((status, json))` whatever the status.
    pub fn publish(&self, topic: &str, body: &Value) -> Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}/v1/publish", self.base))
            .json(&serde_json::json!({"topic": topic, "body": body}))
            .send()?;
        let status = r.status().as_u16();
        Ok((status, r.json()?))
    }

    /// `GET path`, returning status and JSON.
    pub fn get_json(&self, path: &str) -> Result<(u16, Value)> {
        let r = self.http.get(format!("{}{path}", self.base)).send()?;
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
            .http
            .get(format!("{}/v1/heads", self.base))
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
