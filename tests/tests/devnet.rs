//! `tidings devnet`: the README's 3-node tour runs on it, and stopping it (SIGTERM, or even
//! SIGKILL) stops every node it started, so no node outlives the devnet that owns its data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use tidings_tests::{
    Api, collect_until, line_channel, poll, signal_and_wait, sse_subscribe, tidings_bin,
};

/// A running `tidings devnet` and what it printed.
struct Devnet {
    child: Child,
    /// Node APIs in the order the devnet printed them.
    apis: Vec<String>,
    /// The devnet's own directory (under the test's TMPDIR).
    dir: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Devnet {
    /// Starts `tidings devnet --nodes N` with OS-chosen API ports and its directory under
    /// `tmp`, and waits for "devnet ready".
    fn start(tmp: &Path, nodes: usize) -> Result<Devnet> {
        let mut child = Command::new(tidings_bin())
            .args(["devnet", "--nodes", &nodes.to_string(), "--base-port", "0"])
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tidings devnet")?;
        let lines = line_channel(child.stdout.take().context("devnet stdout")?);
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut apis = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .context("devnet never said it was ready")?;
            if let Some(api) = line.split_whitespace().skip_while(|w| *w != "API").nth(1) {
                apis.push(api.to_string());
            }
            if let Some(dir) = line.strip_prefix(&format!("devnet ready: {nodes} nodes in ")) {
                ensure!(
                    apis.len() == nodes,
                    "devnet printed {} APIs: {apis:?}",
                    apis.len()
                );
                let devnet = Devnet {
                    child,
                    apis,
                    dir: PathBuf::from(dir.trim()),
                    lines,
                };
                ensure!(devnet.dir.starts_with(tmp), "devnet dir {:?}", devnet.dir);
                let running = processes_mentioning(&devnet.dir).len();
                ensure!(running == nodes, "{running} node processes, want {nodes}");
                return Ok(devnet);
            }
        }
    }

    /// Sends the devnet `sig` and waits up to `timeout` for it to exit; its exit status.
    fn stop_with(&mut self, sig: libc::c_int, timeout: Duration) -> Result<ExitStatus> {
        signal_and_wait(&mut self.child, sig, timeout).context("devnet did not exit")
    }

    /// The rest of what the devnet printed (after it exited).
    fn rest_of_output(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever a failed test leaves behind must not keep running.
        for pid in processes_mentioning(&self.dir) {
            // SAFETY: kill(2) with a pid read from /proc; at worst it names a process that exited.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Pids of live processes whose command line mentions `dir` (the devnet's nodes run with
/// `--data <dir>/node<i>`).
fn processes_mentioning(dir: &Path) -> Vec<libc::pid_t> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            // A zombie has an empty command line; it is no longer running.
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(pid)
        })
        .collect()
}

/// Polls until no process mentions `dir`, or fails naming them.
fn wait_no_nodes(dir: &Path, timeout: Duration) -> Result<()> {
    if poll(timeout, || {
        processes_mentioning(dir).is_empty().then_some(())
    })
    .is_none()
    {
        bail!(
            "nodes still running {:?} after the devnet stopped: {:?}",
            timeout,
            processes_mentioning(dir)
        );
    }
    Ok(())
}

#[test]
fn the_readme_tour_runs_on_a_devnet_and_sigterm_stops_every_node() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut devnet = Devnet::start(tmp.path(), 3)?;

    // The tour: subscribe on the third node, publish on the first and second.
    let filter = "/fruits/** where ripe = true";
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", devnet.apis[2]),
        &[("filter", filter)],
    )?;
    let (_socket, rx) = sse_subscribe(&url)?;
    let apis: Vec<Api> = devnet.apis.iter().map(|a| Api::new(a)).collect();
    // K = 3 brokers: the lease is on every member of the `fruits` set once it is placed.
    poll(Duration::from_secs(30), || {
        let leases: u64 = apis
            .iter()
            .filter_map(|a| a.get_json("/v1/status").ok()?.1["leases"].as_u64())
            .sum();
        (leases == 3).then_some(())
    })
    .context("the subscription's leases were never placed")?;
    let mut want = Vec::new();
    for (api, topic, ripe) in [
        (&apis[0], "/fruits/apple", true),
        (&apis[1], "/fruits/lime", false),
        (&apis[0], "/fruits/pear", true),
    ] {
        let (code, v) = api.publish(topic, &json!({ "ripe": ripe }))?;
        ensure!(code == 200, "publish {topic}: {code} {v}");
        if ripe {
            want.push(v["cid"].as_str().context("cid")?.to_string());
        }
    }
    // Sentinels after the last event of each stream: the lime's (a wrongly delivered lime would
    // come before it) and the pear's. Nothing but the two ripe events may come before them.
    let mut sentinels = Vec::new();
    for (api, topic) in [(&apis[1], "/fruits/lime"), (&apis[0], "/fruits/pear")] {
        let (code, v) = api.publish(topic, &json!({ "ripe": true, "sentinel": true }))?;
        ensure!(code == 200, "publish sentinel {topic}: {code} {v}");
        sentinels.push(v["cid"].as_str().context("cid")?.to_string());
    }
    let got = collect_until(&rx, &sentinels, "devnet subscriber")?;
    ensure!(
        got == want,
        "subscriber got {got:?} before the sentinels, want {want:?} (the lime is filtered out \
         in the network)"
    );

    let status = devnet.stop_with(libc::SIGTERM, Duration::from_secs(30))?;
    ensure!(status.success(), "devnet exited with {status}");
    ensure!(
        processes_mentioning(&devnet.dir).is_empty(),
        "nodes outlived a SIGTERMed devnet: {:?}",
        processes_mentioning(&devnet.dir)
    );
    ensure!(!devnet.dir.exists(), "devnet left {:?} behind", devnet.dir);
    let rest = devnet.rest_of_output();
    ensure!(
        rest.iter().any(|l| l.starts_with("stopped; removed")),
        "devnet did not say it stopped: {rest:?}"
    );
    Ok(())
}

#[test]
fn a_killed_devnet_takes_its_nodes_with_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut devnet = Devnet::start(tmp.path(), 2)?;
    devnet.stop_with(libc::SIGKILL, Duration::from_secs(10))?;
    // No cleanup ran in the devnet; the kernel tells each node its parent died.
    wait_no_nodes(&devnet.dir, Duration::from_secs(15))
}
