//! A headless Chromium driven through the DevTools protocol (CDP) over its WebSocket: just
//! what the console tests need (navigate, evaluate, wait for a condition, screenshot, and the
//! page's console errors).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `$CHROMIUM`, else `chromium` (Debian's package, which scripts/test.sh
/// installs).
pub fn chromium_bin() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from)
}

/// One headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events received while waiting for replies, in order.
    events: Vec<Value>,
}

impl Browser {
    /// Starts Chromium (1280×900 window, throwaway profile) and attaches to its first page.
    pub fn start() -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(chromium_bin())
            .args([
                "--headless",
                // Tests run as root in CI containers, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it with `apt-get install chromium`, or set CHROMIUM)",
                    chromium_bin().display()
                )
            })?;
        let stderr = child.stderr.take().context("chromium stderr")?;
        let lines = crate::line_channel(stderr);
        let deadline = Instant::now() + Duration::from_secs(30);
        let browser_ws = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    bail!("chromium printed no DevTools address within 30 s");
                }
            };
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                break url.trim().to_string();
            }
        };
        // Keep draining stderr so Chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let host = browser_ws
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .context("DevTools address")?
            .to_string();
        let page_ws = crate::poll(Duration::from_secs(10), || {
            let list: Value = reqwest::blocking::get(format!("http://{host}/json/list"))
                .ok()?
                .json()
                .ok()?;
            list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_string)
        })
        .context("no page target in chromium")?;
        let (ws, _) = tungstenite::connect(page_ws.as_str()).context("CDP connect")?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
        }
        let mut b = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            events: Vec::new(),
        };
        b.call("Runtime.enable", json!({}))?;
        b.call("Log.enable", json!({}))?;
        b.call("Page.enable", json!({}))?;
        Ok(b)
    }

    /// Sends a CDP command and returns its result, keeping events that arrive meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(msg.to_string()))?;
        loop {
            let m = self
                .ws
                .read()
                .with_context(|| format!("waiting for {method}"))?;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str())?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Loads `url` and waits for its `load` event.
    pub fn navigate(&mut self, url: &str) -> Result<()> {
        self.call("Page.navigate", json!({ "url": url }))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .events
            .iter()
            .any(|e| e["method"] == "Page.loadEventFired")
        {
            if Instant::now() > deadline {
                bail!("{url} did not load within 30 s");
            }
            // Any command flushes the events queued before its reply.
            self.call("Runtime.evaluate", json!({"expression": "1"}))?;
        }
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        Ok(())
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            bail!("{expr}: {ex}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it is neither null, false, 0 nor "" (or `timeout` passes).
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr)?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {expr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, data)?;
        Ok(())
    }

    /// Errors the page reported so far: uncaught exceptions, `console.error`, and the browser's
    /// own error log (failed loads, CSP refusals).
    pub fn console_errors(&mut self) -> Result<Vec<String>> {
        self.call("Runtime.evaluate", json!({"expression": "1"}))?;
        Ok(self
            .events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled" if e["params"]["type"] == "error" => {
                    Some(e["params"]["args"].to_string())
                }
                "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
