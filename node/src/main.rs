//! The `tidings` binary.

mod cli;
mod cmd;
mod devnet;
mod signals;

use anyhow::Result;
use clap::Parser;
use tidings_node::{Node, NodeConfig};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command};

// The node allocates small, short-lived buffers for every event on many threads (requests,
// blocks, JSON, messages): glibc's malloc took 14% of its CPU under load; mimalloc is built for
// exactly that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Like any Unix filter, a client command stops quietly when its reader goes away (`tidings
    // sub ... | head`). A node (and a devnet) ignores SIGPIPE: a client that goes away while
    // its answer is being written makes that write fail, and must not kill the node.
    #[cfg(unix)]
    {
        let server = matches!(cli.command, Command::Node(_) | Command::Devnet(_));
        let action = if server { libc::SIG_IGN } else { libc::SIG_DFL };
        // SAFETY: before any thread exists (parsing the arguments starts none); both actions
        // are always valid.
        unsafe {
            libc::signal(libc::SIGPIPE, action);
        }
    }
    if matches!(cli.command, Command::Node(_) | Command::Devnet(_)) {
        tidings_node::process::disable_transparent_huge_pages();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain ("error: a: b: c"), not a backtrace: these are user-facing.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let default_level = if matches!(cli.command, Command::Node(_) | Command::Devnet(_)) {
        "info"
    } else {
        "warn"
    };
    // Colours only for a person at a terminal: log files and pipes get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => run_node(args).await,
            other => cmd::run_client(other).await,
        }
    })
}

async fn run_node(args: cli::NodeArgs) -> Result<()> {
    let node = Node::start(NodeConfig {
        data_dir: args.data,
        api: args.api,
        token: args.token,
        cors_origins: args.cors_origin,
        net: tidings_node::net::NetConfig {
            listen: args.listen,
            bootstrap: args.bootstrap,
            role: args.role,
            replication: args.replication as usize,
            request_rate: args.peer_request_rate,
        },
        history: tidings_node::history::HistoryConfig {
            retain_age: args.retain_age.map(|d| d.0),
            retain_bytes: args.retain_bytes.map(|b| b.0),
            durable_expiry: args.durable_expiry.0,
            sync_interval: args.sync_interval.0,
        },
        ipfs_api: args.ipfs_api,
    })
    .await?;
    println!(
        "tidings node {} — API http://{}",
        node.peer_id(),
        node.api_addr()
    );
    println!(
        "try: tidings pub /demo/hello '{{\"msg\": \"hi\"}}'{}   (Ctrl-C stops the node cleanly)",
        api_flag(node.api_addr())
    );
    signals::shutdown().await;
    tracing::info!("shutting down: finishing in-flight requests");
    node.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The `--api` a client command needs to reach a node on `addr`: none on the default address.
fn api_flag(addr: std::net::SocketAddr) -> String {
    let url = tidings_node::addr::client_url(&addr.to_string()).unwrap_or_default();
    if addr.to_string() == tidings_node::addr::DEFAULT_API_ADDR {
        String::new()
    } else {
        format!(" --api {url}")
    }
}
