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

/// How long stopped nodes get to finish in-flight work before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Cluster {
    /// Asks every node to stop (SIGTERM, as a service manager would), waits up to
    /// [`STOP_GRACE`], kills what is left and removes the directory.
    fn stop(&mut self) {
        for c in &mut self.children {
            terminate(c);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Stores are crash-safe, so a node that did not stop in time loses nothing.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends SIGTERM (a clean stop) where there is one, else kills.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped, so it cannot be reused yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        return;
    }
    let _ = child.kill();
}

/// Makes the node get SIGTERM if this process dies without stopping it (`kill -9` on the
/// devnet), so no node outlives the devnet that owns its directory.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // The parent-death signal follows the thread that forks; devnet runs on the main thread
    // (block_on), which lives as long as the process.
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (prctl, getppid) and allocates nothing.
    let parent = std::process::id();
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The devnet died between fork and prctl: do not start an orphan.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// Runs the devnet until Ctrl-C, SIGTERM or SIGHUP, then stops every node.
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
        die_with_parent(&mut cmd);
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
    watch(&mut cluster).await;
    println!("stopping {} nodes", cluster.children.len());
    cluster.stop();
    println!("stopped; removed {}", dir.display());
    Ok(())
}

/// Waits for a stop signal, saying so once for each node that exits on its own meanwhile.
async fn watch(cluster: &mut Cluster) {
    let stop = crate::signals::shutdown();
    tokio::pin!(stop);
    let mut reported = vec![false; cluster.children.len()];
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for (i, c) in cluster.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait()
                && !reported[i]
            {
                reported[i] = true;
                eprintln!(
                    "warning: node {i} exited with {status} (log: {})",
                    cluster
                        .dir
                        .join(format!("node{i}"))
                        .join("node.log")
                        .display()
                );
            }
        }
    }
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
