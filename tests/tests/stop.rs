//! A node asked to stop (SIGTERM from a service manager, SIGHUP from a closed terminal) shuts
//! down cleanly and exits 0, and what it acknowledged is there when it starts again.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use tidings_tests::NodeProcess;

#[test]
fn a_node_stops_cleanly_on_sigterm_and_on_sighup_and_keeps_what_it_stored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let mut cids: Vec<String> = Vec::new();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        let mut node = NodeProcess::start(&data, &[])?;
        let api = node.api();
        for cid in &cids {
            api.event(cid)
                .with_context(|| format!("{cid} lost across a stop by signal"))?;
        }
        let (code, v) = api.publish("/stop/test", &json!({ "before": name }))?;
        ensure!(code == 200, "publish: {code} {v}");
        cids.push(v["cid"].as_str().context("cid")?.to_string());
        let status = node.stop_with(sig, Duration::from_secs(30))?;
        ensure!(
            status.success(),
            "node exited with {status} on {name}:\n{}",
            node.log()
        );
        ensure!(
            node.log().contains("stopped cleanly"),
            "no clean stop logged on {name}:\n{}",
            node.log()
        );
    }
    let node = NodeProcess::start(&data, &[])?;
    for cid in &cids {
        node.api().event(cid)?;
    }
    Ok(())
}
