//! `tidings devnet`: N nodes on loopback in a temporary directory, joined into one network.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tidings_node::client::Client;

/// Options of `tidings devnet`.
#[derive(clap::Args, Debug)]
pub struct DevnetArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub nodes: u16,
    /// How many of them run as peers (the last ones); the rest are brokers.
    #[arg(long, default_value_t = 0)]
    pub peers: u16,
    /// First API port: node i listens on BASE+i (0: let the OS choose).
    #[arg(long, default_value_t = 7710)]
    pub base_port: u16,
    /// Rendezvous set size K.
    #[arg(long, default_value_t = 3)]
    pub replication: u16,
}

struct Cluster {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM-like stop via kill(); nodes' stores are crash-safe either way.
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the devnet until Ctrl-C.
pub async fn run(args: DevnetArgs) -> Result<()> {
    if args.peers >= args.nodes {
        bail!(
            "--peers must leave at least one broker (nodes {}, peers {})",
            args.nodes,
            args.peers
        );
    }
    let exe = std::env::current_exe().context("locating the tidings binary")?;
    let dir = std::env::temp_dir().join(format!("tidings-devnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cluster = Cluster {
        children: Vec::new(),
        dir: dir.clone(),
    };
    let mut apis = Vec::new();
    let mut bootstrap: Option<String> = None;
    for i in 0..args.nodes {
        let data = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&data)?;
        let port = if args.base_port == 0 {
            0
        } else {
            args.base_port + i
        };
        let role = if i >= args.nodes - args.peers {
            "peer"
        } else {
            "broker"
        };
        let log = std::fs::File::create(data.join("node.log"))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .arg("--data")
            .arg(&data)
            .args(["--api", &format!("127.0.0.1:{port}")])
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
            ])
            .args([
                "--role",
                role,
                "--replication",
                &args.replication.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(b) = &bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cluster
            .children
            .push(cmd.spawn().context("starting a node")?);
        let api = wait_api(&data, cluster.children.last_mut()).await?;
        let status = Client::new(&api, None).status().await?;
        let peer_id = status["peer_id"].as_str().unwrap_or_default().to_string();
        if bootstrap.is_none() {
            bootstrap = status["listen"][0].as_str().map(str::to_string);
        }
        println!(
            "node {i} ({role:6}) API {api}   peer {peer_id}   log {}",
            data.join("node.log").display()
        );
        apis.push(api);
    }
    let brokers = u64::from(args.nodes - args.peers);
    for api in &apis {
        let client = Client::new(api, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let known = client
                .status()
                .await
                .ok()
                .and_then(|s| s["brokers"].as_u64());
            if known == Some(brokers) {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("warning: {api} knows {known:?} of {brokers} brokers after 30 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("devnet ready: {} nodes in {}", args.nodes, dir.display());
    println!(
        "try: tidings sub '/demo/**' --api {}    and    tidings pub /demo/x '{{\"n\": 1}}' --api {}",
        apis[apis.len() - 1],
        apis[0]
    );
    println!("Ctrl-C stops every node and removes the directory.");
    let _ = tokio::signal::ctrl_c().await;
    drop(cluster);
    Ok(())
}

/// Waits for a node to write its API address and answer.
async fn wait_api(data: &std::path::Path, child: Option<&mut Child>) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    loop {
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let log = std::fs::read_to_string(data.join("node.log")).unwrap_or_default();
            bail!("a node exited with {status}:\n{log}");
        }
        if let Ok(api) = std::fs::read_to_string(data.join("api.addr")) {
            let api = api.trim().to_string();
            if Client::new(&api, None).status().await.is_ok() {
                return Ok(api);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "a node did not start within 30 s (see {})",
                data.join("node.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
