//! `tidings fetch`: history from the network, with a progress bar.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidings_node::client::Client;

use super::print_json;

/// `tidings fetch`: follows the node's progress lines (a bar on a terminal), then the summary.
pub async fn run(client: &Client, cid: &str, until: &[String], as_json: bool) -> Result<()> {
    use futures::StreamExt;
    let resp = client.fetch(cid, until).await?;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let bar = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("the fetch stream broke")?);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let v: Value = serde_json::from_slice(&line).context("bad line from the node")?;
            if let Some(p) = v.get("progress") {
                if bar {
                    eprint!("\r{}", progress_line(p, started.elapsed().as_secs_f64()));
                }
            } else if let Some(done) = v.get("done") {
                if bar {
                    eprint!("\r\x1b[2K");
                }
                return fetch_summary(done, as_json);
            } else if let Some(e) = v.get("error").and_then(Value::as_str) {
                if bar {
                    eprintln!();
                }
                bail!("fetch failed: {e}");
            }
        }
    }
    bail!("the node closed the fetch before it finished")
}

/// `[#####.....] 41000/100000 blocks, 8.2 MB, 45000 blocks/s` (no total: no bar).
fn progress_line(p: &Value, secs: f64) -> String {
    let blocks = p.get("blocks").and_then(Value::as_u64).unwrap_or(0);
    let bytes = p.get("bytes").and_then(Value::as_u64).unwrap_or(0);
    let rate = if secs > 0.0 {
        blocks as f64 / secs
    } else {
        0.0
    };
    let tail = format!(
        "{blocks} blocks, {:.1} MB, {rate:.0} blocks/s",
        bytes as f64 / 1e6
    );
    match p.get("estimate").and_then(Value::as_u64) {
        Some(total) if total > 0 => {
            let done = (blocks.min(total) * 30 / total) as usize;
            format!(
                "[{}{}] {tail} of ~{total}",
                "#".repeat(done),
                ".".repeat(30 - done)
            )
        }
        _ => tail,
    }
}

fn fetch_summary(done: &Value, as_json: bool) -> Result<()> {
    let n = |k: &str| done.get(k).and_then(Value::as_u64).unwrap_or(0);
    let missing: Vec<&str> = done
        .get("missing")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if as_json {
        print_json(done)?;
    } else {
        let sources = done
            .get("sources")
            .and_then(Value::as_array)
            .map_or(0, |a| a.len());
        let from_ipfs = match n("ipfs_blocks") {
            0 => String::new(),
            b => format!(" and IPFS ({b} blocks)"),
        };
        println!(
            "fetched {} blocks ({:.1} MB) from {sources} peer(s){from_ipfs} in {:.2} s: {} verified, {} new, {} held already; {}",
            n("blocks"),
            n("bytes") as f64 / 1e6,
            done.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
            n("verified"),
            n("new_blocks"),
            n("held"),
            if missing.is_empty() {
                "complete".to_string()
            } else {
                format!("{} missing", missing.len())
            }
        );
    }
    if !missing.is_empty() {
        bail!(
            "history incomplete: no peer asked (nor IPFS, if the node has a backend) had {} block(s), first {}",
            missing.len(),
            missing[0]
        );
    }
    Ok(())
}
