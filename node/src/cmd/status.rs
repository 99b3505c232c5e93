//! `tidings status`: the node's `/v1/status`, as a summary people read (`--json` for the rest).

use serde_json::Value;

/// The summary of a `/v1/status` answer, one fact a line.
pub fn summary(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut lines = vec![
        ("peer id", s("peer_id")),
        ("role", format!("{} (tidings {})", s("role"), s("version"))),
        ("api", s("api")),
    ];
    let listen = list("listen");
    if listen.is_empty() {
        lines.push(("listening", "(no address yet)".into()));
    }
    for (i, a) in listen.into_iter().enumerate() {
        lines.push((if i == 0 { "listening" } else { "" }, a));
    }
    lines.push((
        "network",
        format!(
            "{} connected, {} known, rendezvous sets of {}",
            plural(n("peers"), "peer", "peers"),
            plural(n("brokers"), "broker", "brokers"),
            n("replication")
        ),
    ));
    let roots = list("rendezvous");
    lines.push((
        "rendezvous",
        if roots.is_empty() {
            "(no roots)".into()
        } else {
            roots.join(" ")
        },
    ));
    lines.push((
        "subscriptions",
        format!(
            "{} here, {} held as rendezvous",
            n("subscriptions"),
            plural(n("leases"), "lease", "leases")
        ),
    ));
    let store = v.get("store");
    let sn = |k: &str| {
        store
            .and_then(|s| s.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    lines.push((
        "store",
        format!(
            "{}, {}",
            plural(sn("blocks"), "block", "blocks"),
            bytes(sn("bytes"))
        ),
    ));
    if let Some(ipfs) = v.get("ipfs").filter(|i| i.is_object()) {
        lines.push(("ipfs", ipfs_line(ipfs)));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{k:<14}{v}\n"))
        .collect()
}

/// `up at http://127.0.0.1:5001: 12 blocks mirrored, 0 queued`, or, when it fails,
/// `DOWN for 42 s at http://...: 310 blocks queued (cannot reach IPFS: ...)`.
fn ipfs_line(i: &Value) -> String {
    let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("?");
    let n = |k: &str| i.get(k).and_then(Value::as_u64).unwrap_or(0);
    let state = s("state");
    let mut line = match state {
        "up" | "starting" => format!(
            "{state} at {}: {} blocks mirrored, {} queued",
            s("api"),
            n("mirrored"),
            n("queued")
        ),
        _ => format!(
            "{} for {} s at {}: {} blocks queued, {} mirrored ({})",
            state.to_uppercase(),
            n("state_secs"),
            s("api"),
            n("queued"),
            n("mirrored"),
            s("error")
        ),
    };
    for (k, what) in [
        ("fetched", "fetched from it"),
        ("refused", "refused from it"),
        ("skipped", "left the store before it took them"),
    ] {
        if n(k) > 0 {
            line.push_str(&format!("; {} {what}", n(k)));
        }
    }
    line
}

/// `512 B`, `1.6 kB`, `4.2 MB`, `1.1 GB`.
fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_as_one_fact_a_line() {
        let v = serde_json::json!({
            "peer_id": "12D3KooWx", "role": "broker", "version": "0.1.0",
            "api": "http://127.0.0.1:7700", "listen": ["/ip4/127.0.0.1/tcp/7800/p2p/12D3KooWx"],
            "peers": 1, "brokers": 2, "replication": 3, "rendezvous": ["fruits", "stocks"],
            "subscriptions": 1, "leases": 2, "store": {"blocks": 4, "bytes": 1620}
        });
        assert_eq!(
            summary(&v),
            "peer id       12D3KooWx\n\
             role          broker (tidings 0.1.0)\n\
             api           http://127.0.0.1:7700\n\
             listening     /ip4/127.0.0.1/tcp/7800/p2p/12D3KooWx\n\
             network       1 peer connected, 2 brokers known, rendezvous sets of 3\n\
             rendezvous    fruits stocks\n\
             subscriptions 1 here, 2 leases held as rendezvous\n\
             store         4 blocks, 1.6 kB\n"
        );
    }

    #[test]
    fn the_ipfs_line_says_the_state_and_the_backlog() {
        let mut v = serde_json::json!({"ipfs": {
            "api": "http://127.0.0.1:5001", "state": "up", "error": null, "state_secs": 3,
            "queued": 0, "mirrored": 12, "skipped": 0, "fetched": 0, "refused": 0
        }});
        assert!(summary(&v).ends_with(
            "ipfs          up at http://127.0.0.1:5001: 12 blocks mirrored, 0 queued\n"
        ));
        v["ipfs"]["state"] = "down".into();
        v["ipfs"]["state_secs"] = 42.into();
        v["ipfs"]["queued"] = 310.into();
        v["ipfs"]["refused"] = 1.into();
        v["ipfs"]["error"] = "cannot reach IPFS: connection failed".into();
        assert!(summary(&v).ends_with(
            "ipfs          DOWN for 42 s at http://127.0.0.1:5001: 310 blocks queued, 12 mirrored \
             (cannot reach IPFS: connection failed); 1 refused from it\n"
        ));
        assert!(!summary(&serde_json::json!({"ipfs": null})).contains("ipfs"));
    }
}
