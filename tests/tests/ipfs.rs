//! The IPFS backend against a real IPFS daemon (js-ipfs 0.66.1, offline, started here) and a
//! fake RPC for what a real one never does (answering tampered blocks or wrong CIDs):
//! * stored blocks are mirrored with identical CIDs and bytes, and `tidings pin` pins a stream
//!   that IPFS then walks from its head;
//! * a node with an empty store and no tidings peers recovers a stream from IPFS alone;
//! * a tampered block from IPFS is refused, and an IPFS answering wrong CIDs to the mirror
//!   neither stops nor slows publishing;
//! * IPFS stopped mid-stream (and the node killed meanwhile): once both are back, the mirror
//!   catches up and nothing is lost.
//!
//! The daemon is `$JSIPFS`, else the one `scripts/js-ipfs.sh` installs under target/ (which
//! `scripts/test.sh` runs first). Figures for the 10,000-event stream:
//! `cargo test -p tidings-tests --test ipfs -- --ignored --nocapture`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tidings_ipld_schema::{Cid, DAG_CBOR, car, cid_of};
use tidings_tests::{NodeProcess, poll, signal_and_wait, signed_stream_car, tidings};

/// How long js-ipfs may take to start (≈5 s here; more on a loaded CI machine).
const DAEMON_START: Duration = Duration::from_secs(90);
/// How long the mirror may take to drain what a test stored.
const DRAIN: Duration = Duration::from_secs(120);

/// The `jsipfs` command.
fn jsipfs_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("JSIPFS") {
        return Ok(PathBuf::from(p));
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace")?;
    let bin = ws.join("target/test-tools/js-ipfs/node_modules/.bin/jsipfs");
    ensure!(
        bin.exists(),
        "{} not found: run scripts/js-ipfs.sh (scripts/test.sh does) or set JSIPFS",
        bin.display()
    );
    Ok(bin)
}

/// A js-ipfs daemon on its own repo, offline, its RPC on a loopback port.
struct JsIpfs {
    child: Option<Child>,
    repo: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    api: String,
    log: PathBuf,
}

impl JsIpfs {
    /// A new repo (test profile, empty, no routing, no bootstrap) and its daemon, started.
    fn start() -> Result<JsIpfs> {
        let repo = tempfile::tempdir()?;
        let log = repo.path().join("daemon.log");
        let out = Command::new(jsipfs_bin()?)
            .args(["init", "--profile", "test", "--empty-repo"])
            .env("IPFS_PATH", repo.path())
            .stdin(Stdio::null())
            .output()
            .context("jsipfs init")?;
        ensure!(
            out.status.success(),
            "jsipfs init failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Edited in the file rather than with `jsipfs config` (one Node start per key).
        let config_path = repo.path().join("config");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
        let port = free_port()?;
        config["Addresses"]["API"] = json!(format!("/ip4/127.0.0.1/tcp/{port}"));
        config["Addresses"]["Gateway"] = json!("/ip4/127.0.0.1/tcp/0");
        config["Addresses"]["Swarm"] = json!(["/ip4/127.0.0.1/tcp/0"]);
        config["Addresses"]["RPC"] = json!("/ip4/127.0.0.1/tcp/0");
        config["Addresses"]["Delegates"] = json!([]);
        config["Bootstrap"] = json!([]);
        config["Routing"] = json!({"Type": "none"});
        config["Discovery"] = json!({"MDNS": {"Enabled": false}, "webRTCStar": {"Enabled": false}});
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let mut d = JsIpfs {
            child: None,
            repo,
            api: format!("http://127.0.0.1:{port}"),
            log,
        };
        d.restart()?;
        Ok(d)
    }

    /// Starts the daemon (again) on its repo and port; returns once its RPC answers.
    fn restart(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(jsipfs_bin()?)
            .arg("daemon")
            .env("IPFS_PATH", self.repo.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("jsipfs daemon")?;
        self.child = Some(child);
        let http = reqwest::blocking::Client::new();
        let url = format!("{}/api/v0/version", self.api);
        let up = poll(DAEMON_START, || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(status));
            }
            let ok = http.post(&url).send().ok()?.status().is_success();
            ok.then_some(Ok(()))
        });
        match up {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => bail!("jsipfs daemon exited with {status}:\n{}", self.log()),
            None => bail!(
                "jsipfs daemon did not answer in {DAEMON_START:?}:\n{}",
                self.log()
            ),
        }
    }

    /// SIGSTOP or SIGCONT: a stalled IPFS (connections open, nothing answered) and back.
    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let c = self.child.as_ref().context("not running")?;
        let pid = libc::pid_t::try_from(c.id())?;
        // SAFETY: kill(2) on our own child, not reaped while `self` holds it.
        ensure!(
            unsafe { libc::kill(pid, sig) } == 0,
            "kill({pid}, {sig}) failed"
        );
        Ok(())
    }

    /// A clean stop (SIGTERM), as an operator stops it.
    fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            signal_and_wait(&mut c, libc::SIGTERM, Duration::from_secs(30))?;
        }
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST /api/v0/CALL?args`: status and body.
    fn call(&self, call: &str, args: &[(&str, &str)]) -> Result<(u16, Vec<u8>)> {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/api/v0/{call}", self.api))
            .query(args)
            .timeout(Duration::from_secs(30))
            .send()?;
        Ok((r.status().as_u16(), r.bytes()?.to_vec()))
    }

    /// `block/get`: the bytes IPFS holds under `cid` (it is offline: absent answers at once).
    fn block(&self, cid: &str) -> Result<Vec<u8>> {
        let (s, b) = self.call("block/get", &[("arg", cid), ("timeout", "5s")])?;
        ensure!(
            s == 200,
            "block/get {cid}: {s} {}",
            String::from_utf8_lossy(&b)
        );
        Ok(b)
    }
}

impl Drop for JsIpfs {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The node's blocks of `topic`, from its CAR export.
fn node_blocks(node: &NodeProcess, topic: &str) -> Result<HashMap<Cid, Vec<u8>>> {
    let r = node
        .api()
        .request(reqwest::Method::GET, "/v1/car")
        .query(&[("topic", topic)])
        .send()?;
    ensure!(r.status().is_success(), "GET /v1/car: {}", r.status());
    let bytes = r.bytes()?;
    Ok(car::read_car(&bytes)?.blocks.into_iter().collect())
}

/// The node's IPFS backend status.
fn ipfs_status(node: &NodeProcess) -> Result<Value> {
    Ok(node.status()?["ipfs"].clone())
}

/// Waits until the mirror has nothing queued and IPFS took at least `at_least` blocks.
fn wait_drained(node: &NodeProcess, at_least: u64) -> Result<Value> {
    poll(DRAIN, || {
        let s = ipfs_status(node).ok()?;
        (s["state"] == "up" && s["queued"] == 0 && s["mirrored"].as_u64()? >= at_least).then_some(s)
    })
    .with_context(|| {
        format!(
            "mirror did not drain {at_least} blocks in {DRAIN:?}: {:?}\n{}",
            ipfs_status(node).ok(),
            node.log()
        )
    })
}

/// Every block of `blocks` is in IPFS with the same bytes (so under the same CID).
fn assert_in_ipfs(ipfs: &JsIpfs, blocks: &HashMap<Cid, Vec<u8>>) -> Result<()> {
    for (cid, data) in blocks {
        let got = ipfs.block(&cid.to_string())?;
        ensure!(&got == data, "IPFS holds other bytes under {cid}");
        ensure!(
            cid_of(DAG_CBOR, &got) == *cid,
            "bytes of {cid} hash elsewhere"
        );
    }
    Ok(())
}

fn publish_n(node: &NodeProcess, topic: &str, from: u64, n: u64) -> Result<Vec<String>> {
    let api = node.api();
    (from..from + n)
        .map(|i| {
            let (s, v) = api.publish(topic, &json!({"n": i, "symbol": "CTT"}))?;
            ensure!(s == 200, "publish {i}: {s} {v}");
            Ok(v["cid"].as_str().context("cid")?.to_string())
        })
        .collect()
}

#[test]
fn blocks_are_mirrored_with_identical_cids_and_bytes_and_pin_walks_from_the_head() -> Result<()> {
    let ipfs = JsIpfs::start()?;
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(dir.path(), &["--ipfs-api", &ipfs.api])?;
    let topic = "/stocks/euronext/CTT";
    let published = publish_n(&node, topic, 0, 40)?;
    // A stream of another author, stored by import (no publish path at all).
    let (car_bytes, imported) = signed_stream_car(7, "/stocks/euronext/EDP", 200)?;
    let (s, v) = node.api().post_bytes("/v1/car", car_bytes)?;
    ensure!(s == 200, "import: {s} {v}");

    let status = wait_drained(&node, 240)?;
    ensure!(
        status["put_spelling"] == "format",
        "js-ipfs 0.66 takes `format`: {status}"
    );
    let mut blocks = node_blocks(&node, topic)?;
    blocks.extend(node_blocks(&node, "/stocks/euronext/EDP")?);
    ensure!(blocks.len() == 240, "{} blocks exported", blocks.len());
    for c in published.iter().chain(&imported) {
        ensure!(
            blocks.contains_key(&Cid::try_from(c.as_str())?),
            "{c} not held"
        );
    }
    assert_in_ipfs(&ipfs, &blocks)?;

    let metrics = node
        .api()
        .request(reqwest::Method::GET, "/metrics")
        .send()?
        .text()?;
    ensure!(metrics.contains("tidings_ipfs_up 1"), "{metrics}");
    ensure!(metrics.contains("tidings_ipfs_mirror_queue 0"), "{metrics}");
    let (ok, out, _) = tidings(&["status", "--api", &node.api])?;
    ensure!(
        ok && out.contains("blocks mirrored, 0 queued"),
        "status: {out}"
    );

    // `tidings pin TOPIC` prints the head; IPFS walks the stream back from it.
    let (ok, out, err) = tidings(&["pin", topic, "--api", &node.api])?;
    ensure!(ok, "pin failed: {out}{err}");
    let head = out.trim();
    ensure!(
        head == published.last().context("published")?,
        "pin printed {out:?}"
    );
    ensure!(err.contains("40 blocks"), "pin said {err:?}");
    let (s, pins) = ipfs.call("pin/ls", &[("arg", head), ("type", "recursive")])?;
    ensure!(s == 200, "pin/ls: {}", String::from_utf8_lossy(&pins));
    // As the README shows it: `curl -X POST $IPFS/api/v0/dag/get?arg=<HEAD>/prev/0/body`.
    let (s, body) = ipfs.call("dag/get", &[("arg", &format!("{head}/prev/0/body"))])?;
    ensure!(s == 200, "dag/get: {}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body)?;
    ensure!(body["n"] == 38, "the event before the head: {body}");
    Ok(())
}

/// Publishes `n` events (4 writers), lets the mirror carry them to IPFS, then recovers the
/// stream on a node with an empty store and no tidings peers from IPFS alone; prints the
/// figures.
fn publish_mirror_recover(n: u64) -> Result<()> {
    let ipfs = JsIpfs::start()?;
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(dir.path(), &["--ipfs-api", &ipfs.api])?;
    let topic = "/stocks/euronext/CTT";
    let started = Instant::now();
    let writers = 4;
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let api = node.api();
            std::thread::spawn(move || -> Result<u64> {
                let mut k = 0;
                for i in (w..n).step_by(writers as usize) {
                    let (s, v) = api.publish(topic, &json!({"n": i, "symbol": "CTT"}))?;
                    ensure!(s == 200, "publish {i}: {s} {v}");
                    k += 1;
                }
                Ok(k)
            })
        })
        .collect();
    let mut sent = 0;
    for h in handles {
        sent += h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    ensure!(sent == n);
    wait_drained(&node, n)?;
    let mirror_secs = started.elapsed().as_secs_f64();
    let heads = node.api().heads(topic)?;
    let blocks = node_blocks(&node, topic)?;
    ensure!(blocks.len() as u64 == n, "{} blocks held", blocks.len());
    drop(node); // SIGKILL: from here only IPFS has the stream

    let empty = tempfile::tempdir()?;
    let fresh = NodeProcess::start(empty.path(), &["--ipfs-api", &ipfs.api])?;
    ensure!(
        fresh.status()?["peers"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    let t = Instant::now();
    let mut recovered = 0;
    for head in &heads {
        let (ok, out, err) = tidings(&["fetch", head, "--json", "--api", &fresh.api])?;
        ensure!(ok, "fetch {head} failed: {out}{err}\n{}", fresh.log());
        let done: Value =
            serde_json::from_str(&out).with_context(|| format!("fetch printed {out:?}"))?;
        ensure!(done["complete"] == true, "incomplete: {done}");
        recovered += done["ipfs_blocks"].as_u64().context("ipfs_blocks")?;
    }
    let recover_secs = t.elapsed().as_secs_f64();
    ensure!(recovered == n, "{recovered} of {n} blocks came from IPFS");
    // Every block verified and stored: the fresh node exports the same stream.
    ensure!(fresh.api().heads(topic)? == heads, "heads differ");
    ensure!(
        node_blocks(&fresh, topic)? == blocks,
        "the recovered stream differs"
    );
    ensure!(
        ipfs_status(&fresh)?["fetched"] == n,
        "{}",
        ipfs_status(&fresh)?
    );
    println!(
        "ipfs figures: {n} events published in {publish_secs:.2} s ({:.0}/s, 4 writers); \
         mirrored into js-ipfs by {mirror_secs:.2} s ({:.0} blocks/s); \
         recovered from IPFS alone in {recover_secs:.2} s ({:.0} events/s)",
        n as f64 / publish_secs,
        n as f64 / mirror_secs,
        n as f64 / recover_secs
    );
    Ok(())
}

#[test]
fn a_node_with_an_empty_store_recovers_a_stream_from_ipfs_alone() -> Result<()> {
    publish_mirror_recover(300)
}

#[test]
#[ignore = "figures: 10,000 events; cargo test -p tidings-tests --test ipfs -- --ignored --nocapture"]
fn figures_10k_events_mirrored_and_recovered_from_ipfs() -> Result<()> {
    publish_mirror_recover(10_000)
}

/// A fake IPFS RPC: answers `version`, `block/get` from `blocks` (whatever they hold), and
/// `block/put` with `put_key` (a wrong CID); anything else 500.
struct FakeRpc {
    api: String,
    stop: Arc<AtomicBool>,
}

impl FakeRpc {
    fn start(blocks: HashMap<String, Vec<u8>>, put_key: &str) -> Result<FakeRpc> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let api = format!("http://{}", listener.local_addr()?);
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, put_key) = (stop.clone(), put_key.to_string());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (b, k) = (blocks.clone(), put_key.clone());
                        std::thread::spawn(move || {
                            let _ = serve_fake(s, &b, &k);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(FakeRpc { api, stop })
    }
}

impl Drop for FakeRpc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request on `s` (the client's connection may carry more: served in turn).
fn serve_fake(s: TcpStream, blocks: &HashMap<String, Vec<u8>>, put_key: &str) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut out = s;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse()?;
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let url = reqwest::Url::parse(&format!("http://x{target}"))?;
        let arg = url
            .query_pairs()
            .find(|(k, _)| k == "arg")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let (status, ctype, answer): (u16, &str, Vec<u8>) = match url.path() {
            "/api/v0/version" => (200, "application/json", br#"{"Version":"fake"}"#.to_vec()),
            "/api/v0/block/put" => (
                200,
                "application/json",
                json!({"Key": put_key, "Size": 1}).to_string().into_bytes(),
            ),
            "/api/v0/block/get" => match blocks.get(&arg) {
                Some(b) => (200, "application/octet-stream", b.clone()),
                None => (
                    500,
                    "application/json",
                    br#"{"Message":"block not found","Code":0}"#.to_vec(),
                ),
            },
            _ => (
                500,
                "application/json",
                br#"{"Message":"not here","Code":0}"#.to_vec(),
            ),
        };
        write!(
            out,
            "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        )?;
        out.write_all(&answer)?;
        out.flush()?;
    }
}

#[test]
fn a_tampered_block_from_ipfs_is_refused_and_wrong_cids_do_not_stop_publishing() -> Result<()> {
    let topic = "/stocks/euronext/CTT";
    let (car_bytes, cids) = signed_stream_car(9, topic, 3)?;
    let stream: HashMap<Cid, Vec<u8>> = car::read_car(&car_bytes)?.blocks.into_iter().collect();
    let [first, second, head] = [&cids[0], &cids[1], &cids[2]];
    let mut served: HashMap<String, Vec<u8>> = stream
        .iter()
        .map(|(c, d)| (c.to_string(), d.clone()))
        .collect();
    // The event before the head, one byte of its signature changed.
    let tampered = served.get_mut(second.as_str()).context("second")?;
    let at = tampered.len() - 5;
    tampered[at] ^= 0x01;
    // The mirror's puts are answered with another block's CID.
    let fake = FakeRpc::start(served, first)?;

    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start_with_env(dir.path(), &[], &[("TIDINGS_IPFS_API", &fake.api)])?;
    let (ok, out, err) = tidings(&["fetch", head, "--api", &node.api])?;
    ensure!(!ok, "fetch succeeded with a tampered block: {out}");
    ensure!(err.contains("history incomplete"), "fetch said {err}");
    // The head verified and is kept; the tampered block and what lies behind it are not.
    node.api().event(head)?;
    for c in [second, first] {
        let (s, _) = node.api().get_json(&format!("/v1/events/{c}"))?;
        ensure!(s == 404, "{c} stored: {s}");
    }
    let st = ipfs_status(&node)?;
    ensure!(st["refused"] == 1 && st["fetched"] == 1, "{st}");
    ensure!(
        node.log()
            .contains("IPFS sent a block that fails verification"),
        "no warning:\n{}",
        node.log()
    );

    // Publishing goes on, at its own pace, while IPFS answers every put with a wrong CID.
    for i in 0..20 {
        let t = Instant::now();
        let (s, v) = node.api().publish("/news/x", &json!({"i": i}))?;
        ensure!(s == 200, "publish while IPFS is faulty: {s} {v}");
        ensure!(
            t.elapsed() < Duration::from_secs(2),
            "a publish waited {:?}",
            t.elapsed()
        );
    }
    let st = poll(Duration::from_secs(30), || {
        let s = ipfs_status(&node).ok()?;
        (s["state"] == "faulty" && s["queued"].as_u64()? >= 1).then_some(s)
    })
    .with_context(|| format!("state never faulty: {:?}", ipfs_status(&node).ok()))?;
    // Only the head, which came from IPFS and is not put back.
    ensure!(st["mirrored"] == 1, "{st}");
    ensure!(
        node.log().contains("IPFS backend failing"),
        "no warning:\n{}",
        node.log()
    );
    let (ok, out, _) = tidings(&["status", "--api", &node.api])?;
    ensure!(ok && out.contains("FAULTY for"), "status: {out}");
    Ok(())
}

#[test]
fn ipfs_stopped_mid_stream_and_the_node_killed_the_mirror_catches_up_and_loses_nothing()
-> Result<()> {
    let mut ipfs = JsIpfs::start()?;
    let dir = tempfile::tempdir()?;
    let topic = "/stocks/euronext/CTT";
    // The RPC as IPFS names it in its config (`Addresses.API`): a multiaddr.
    let multiaddr = ipfs.api.replace("http://127.0.0.1:", "/ip4/127.0.0.1/tcp/");
    let mut node = NodeProcess::start(dir.path(), &["--ipfs-api", &multiaddr])?;
    publish_n(&node, topic, 0, 20)?;
    wait_drained(&node, 20)?;

    // A stalled IPFS (SIGSTOP: it accepts connections and answers nothing) slows no publish.
    ipfs.signal(libc::SIGSTOP)?;
    for i in 1000..1010 {
        let t = Instant::now();
        let (s, v) = node.api().publish("/news/stall", &json!({"n": i}))?;
        ensure!(s == 200, "publish while IPFS is stalled: {s} {v}");
        ensure!(
            t.elapsed() < Duration::from_secs(2),
            "a publish waited {:?}",
            t.elapsed()
        );
    }
    ipfs.signal(libc::SIGCONT)?;
    wait_drained(&node, 30)?;

    ipfs.stop()?;
    // Publishing goes on, at its own pace, while IPFS is away.
    for i in 20..60 {
        let t = Instant::now();
        let (s, v) = node
            .api()
            .publish(topic, &json!({"n": i, "symbol": "CTT"}))?;
        ensure!(s == 200, "publish while IPFS is down: {s} {v}");
        ensure!(
            t.elapsed() < Duration::from_secs(2),
            "a publish waited {:?}",
            t.elapsed()
        );
    }
    let st = poll(Duration::from_secs(30), || {
        let s = ipfs_status(&node).ok()?;
        // All 40 counted, though the mirror is stuck retrying the first of them.
        (s["state"] == "down" && s["queued"].as_u64()? >= 40).then_some(s)
    })
    .with_context(|| format!("never down with 40 queued: {:?}", ipfs_status(&node).ok()))?;
    ensure!(
        st["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach IPFS")),
        "{st}"
    );
    let (ok, out, _) = tidings(&["status", "--api", &node.api])?;
    ensure!(ok && out.contains("DOWN for"), "status: {out}");

    // kill -9 while IPFS is away: the backlog is the store's log, so it survives.
    node.kill();
    let node = NodeProcess::start(dir.path(), &["--ipfs-api", &multiaddr])?;
    let st = poll(Duration::from_secs(30), || {
        let s = ipfs_status(&node).ok()?;
        (s["queued"].as_u64()? >= 40).then_some(s)
    })
    .with_context(|| format!("backlog lost on restart: {:?}", ipfs_status(&node).ok()))?;
    ensure!(st["state"] != "up", "{st}");
    publish_n(&node, topic, 60, 10)?;

    ipfs.restart()?;
    wait_drained(&node, 50)?; // counted since the restart: the 40 and the 10
    let mut blocks = node_blocks(&node, topic)?;
    ensure!(blocks.len() == 70, "{} blocks held", blocks.len());
    blocks.extend(node_blocks(&node, "/news/stall")?);
    ensure!(blocks.len() == 80, "{} blocks held", blocks.len());
    assert_in_ipfs(&ipfs, &blocks)?;
    ensure!(
        node.log().contains("IPFS is back") || node.log().contains("IPFS reachable"),
        "{}",
        node.log()
    );
    Ok(())
}

#[test]
fn pin_without_a_backend_and_a_bad_ipfs_api_say_what_to_do() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(dir.path(), &[])?;
    let (s, v) = node.api().publish("/news/x", &json!({"i": 1}))?;
    ensure!(s == 200, "{s} {v}");
    let (ok, out, err) = tidings(&["pin", "/news/x", "--api", &node.api])?;
    ensure!(!ok && out.is_empty(), "pin without a backend: {out}");
    ensure!(
        err.contains("no IPFS backend") && err.contains("--ipfs-api"),
        "{err}"
    );
    ensure!(node.status()?["ipfs"].is_null());

    // A wrong --ipfs-api is refused before the node starts, saying what it wants.
    let bad = tempfile::tempdir()?;
    let (ok, _, err) = tidings(&[
        "node",
        "--data",
        &bad.path().display().to_string(),
        "--api",
        "127.0.0.1:0",
        "--ipfs-api",
        "https://127.0.0.1:5001",
    ])?;
    ensure!(!ok && err.contains("only plain http://"), "{err}");
    Ok(())
}
