//! Command-line interface: argument definitions. The client commands run in [`crate::cmd`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use tidings_node::addr::{self, DEFAULT_API_ADDR};
use tidings_node::client::Client;
use tidings_node::net::Role;
use tidings_node::net::rendezvous::DEFAULT_REPLICATION;

/// `tidings --version`: a build with the test-only fault switches says so, which is how the
/// real-process tests check they run the binary they need.
#[cfg(feature = "test-faults")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (test-faults)");
#[cfg(not(feature = "test-faults"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// tidings: content-based publish/subscribe over IPLD. Every event is a signed, content-addressed
/// block; a single node with its embedded store is a complete network.
#[derive(Parser, Debug)]
#[command(name = "tidings", version = VERSION, propagate_version = true)]
#[command(after_help = "Start a node:        tidings node\n\
Publish an event:    tidings pub /stocks/euronext/CTT '{\"price\": 5.55, \"order\": \"buy\"}'\n\
Subscribe:           tidings sub '/stocks/** where order = \"buy\" and price < 10'\n\
Read it back:        tidings get <CID>\n\
\n\
Environment: TIDINGS_API (client commands' node, HOST:PORT or http://HOST:PORT), TIDINGS_TOKEN\n\
(bearer token), RUST_LOG (log filter), NO_COLOR (no colours in logs).\n\
Documentation: docs/api.md (HTTP API), docs/filters.md (filters), docs/operations.md (flags,\n\
metrics, logs), docs/protocols.md (events and the network) in the source repository.")]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the client commands find a node: `--api`, else `--data`, else `TIDINGS_API`, else
/// the default.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// The node's HTTP API: HOST:PORT or http://HOST:PORT [env: TIDINGS_API; default:
    /// 127.0.0.1:7700].
    #[arg(long = "api", value_name = "ADDR")]
    pub api: Option<String>,
    /// Use the node running on this data directory (reads DIR/api.addr, written by `tidings
    /// node --data DIR` when it starts).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Bearer token, needed when the node's API is not on loopback.
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where a client command's node is: a fixed URL, or whatever runs on a data directory now
/// (read again on every connection, so `tidings sub --data DIR` follows a restarted node).
#[derive(Debug, Clone)]
pub enum ApiSource {
    /// The API's base URL.
    Url(String),
    /// The data directory of a local node.
    DataDir(PathBuf),
}

impl ApiSource {
    /// The API's base URL now.
    pub fn url(&self) -> anyhow::Result<String> {
        match self {
            ApiSource::Url(u) => Ok(u.clone()),
            ApiSource::DataDir(d) => addr::from_data_dir(d).map_err(anyhow::Error::msg),
        }
    }
}

impl ClientOpts {
    /// Where the node is, by the order above.
    pub fn source(&self) -> anyhow::Result<ApiSource> {
        let given = |s: &str, what: &str| {
            addr::client_url(s)
                .map(ApiSource::Url)
                .map_err(|e| anyhow::anyhow!("{what} {e}"))
        };
        if let Some(a) = &self.api {
            return given(a, "--api");
        }
        if let Some(d) = &self.data {
            return Ok(ApiSource::DataDir(d.clone()));
        }
        match std::env::var("TIDINGS_API") {
            Ok(a) if !a.trim().is_empty() => given(&a, "TIDINGS_API"),
            _ => given(DEFAULT_API_ADDR, "default"),
        }
    }

    /// A client of the node, found now.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.source()?.url()?, self.token.clone()))
    }
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: embedded store in --data, HTTP API on --api, libp2p on --listen.
    #[command(after_help = "Examples:\n  \
tidings node                                        # ./tidings-data, API on 127.0.0.1:7700, libp2p on 7800\n  \
tidings node --data d2 --api 127.0.0.1:7720 --listen /ip4/127.0.0.1/tcp/7721 \\\n      \
--bootstrap /ip4/127.0.0.1/tcp/7800/p2p/<PEER ID>   # a second node joining the first\n  \
tidings node --api 127.0.0.1:0 --listen /ip4/127.0.0.1/tcp/0   # any free ports; see DIR/api.addr\n\n\
Stops cleanly on Ctrl-C, SIGTERM or SIGHUP. Flags, the data directory, retention and metrics:\n\
docs/operations.md.")]
    Node(NodeArgs),
    /// Start a local network of N nodes on loopback (in a temp dir) and print their API addresses.
    #[command(
        after_help = "Examples:\n  tidings devnet                      # 3 brokers, APIs on 127.0.0.1:7710..7712\n  tidings devnet --nodes 5 --peers 1  # 4 brokers and a peer\n\nCtrl-C, SIGTERM or SIGHUP stops every node (SIGTERM, 10 s to finish) and removes the directory;\nif the devnet itself is killed, the kernel stops its nodes."
    )]
    Devnet(crate::devnet::DevnetArgs),
    /// Publish an event; prints its CID. Bodies from the argument, a file, or stdin lines.
    #[command(after_help = "Examples:\n  \
tidings pub /stocks/euronext/CTT '{\"order\": \"buy\", \"number\": 100, \"price\": 5.55}'\n  \
tidings pub /docs/report --file report.json            # any JSON document, pretty-printed or large\n  \
tidings pub /demo --jsonl < events.jsonl               # one body per line; one CID per line\n  \
printf '{\"n\":1}\\n{\"n\":2}\\n' | tidings pub /demo -     # the same as --jsonl\n  \
tidings pub /demo --jsonl --file events.jsonl          # lines from a file\n\n\
Lines are published in order, up to 256 in flight, one CID printed per line in line order; a\n\
line that is not JSON stops there (earlier ones were published, later ones not sent), a line\n\
the node refuses stops there too (the error says how many lines sent after it were published).\n\
An event is at most 1 MiB.")]
    Pub {
        /// Topic, e.g. /stocks/euronext/CTT (1-16 segments, no wildcards).
        topic: String,
        /// The event body as JSON, or `-` to read one body per line from stdin (as --jsonl).
        #[arg(required_unless_present_any = ["file", "jsonl"], conflicts_with = "file")]
        json: Option<String>,
        /// Read the body from this file (`-`: stdin), one JSON document of any layout; with
        /// --jsonl, one body per line.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        /// One body per line (JSON Lines), from stdin or --file.
        #[arg(long, conflicts_with = "json")]
        jsonl: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Subscribe with a filter; prints each matching event as one JSON line, as it is published.
    #[command(after_help = "Examples:\n  \
tidings sub '/stocks/** where order = \"buy\" and price < 10'\n  \
tidings sub --durable orders '/stocks/** where order = \"buy\"'   # keeps what you miss\n  \
tidings sub --from-start '/docs/**'          # stored history first, then live\n  \
tidings sub --since 15m '/docs/**'\n  \
tidings sub --count 1 '/docs/**'             # exit after the first event\n  \
tidings sub '{\"topic\": \"/stocks/**\", \"order\": \"buy\", \"number\": \">50\", \"price\": \"<10\"}'\n  \
tidings sub '{\"topic\": \"/stocks/**\", \"price\": {\"$lt\": 10}}'\n  \
tidings sub '/fruits/citrus/**'\n\n\
Filters: `=` `!=` `<` `<=` `>` `>=` `in [..]` `exists` `prefix`, `and` `or` `not` and parentheses;\n\
dotted paths (a.b.c) or JSONPath ($.legs[*].price). Topic patterns: `*` one segment, `**` (last) any.\n\
Quote the filter (single quotes), so the shell leaves `*`, `\"` and `<` alone. See docs/filters.md.\n\n\
When the connection drops or the node restarts, it reconnects (saying so on stderr) and resumes\n\
without gap or duplicate: a durable by name, a plain subscription from the last event printed.")]
    Sub {
        /// The filter: text form, the seeds' JSON form, or Mongo-style JSON.
        filter: String,
        /// A durable subscription: the network keeps what you miss while away and sends it when
        /// you come back with the same name (and filter). Each event is acknowledged once
        /// printed.
        #[arg(long, value_name = "NAME")]
        durable: Option<String>,
        /// Stored events from TIME first, then live ones: milliseconds since the Unix epoch, or
        /// an age like 90s, 15m, 2h, 7d.
        #[arg(long, value_name = "TIME", conflicts_with = "from_start")]
        since: Option<String>,
        /// Every stored event first, then live ones (same as --since 0).
        #[arg(long)]
        from_start: bool,
        /// Exit after printing N events.
        #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Exit (status 1) when the connection ends, instead of reconnecting.
        #[arg(long)]
        no_reconnect: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a durable subscription (and the backlog kept for it).
    #[command(after_help = "Example:\n  tidings unsub-durable orders")]
    UnsubDurable {
        /// Its name.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print one event as JSON (its seven keys: cid, topic, author, seq, time, prev, body).
    #[command(after_help = "Example:\n  tidings get bafyreib...\n\n\
An event this node does not hold: `tidings fetch CID` fetches it from the network.")]
    Get {
        /// The event's CID.
        cid: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Fetch and verify history back from CID (through `prev` and body links) from other nodes,
    /// storing it here; prints a summary. Exits 1 if some of it could not be found.
    #[command(
        after_help = "Examples:\n  tidings fetch bafyreib...                    # all history behind this event\n  tidings fetch bafyreib... --until bafyreic... # stop at an event held already\n\nAsks the root's rendezvous brokers first, then the author, then any connected node;\none request per peer streams every block, and each is verified (CID and signature)\nbefore it is stored. A peer that sends a bad block is dropped."
    )]
    Fetch {
        /// The newest event wanted.
        cid: String,
        /// Stop at this CID (not fetched, nor anything behind it); repeatable.
        #[arg(long, value_name = "CID")]
        until: Vec<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print the current heads of a topic's stream, one CID a line.
    #[command(after_help = "Example:\n  tidings heads /stocks/euronext/CTT")]
    Heads {
        /// The topic.
        topic: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Write a topic's stream as a CAR v1 file (roots = heads) to stdout or --output.
    #[command(after_help = "Example:\n  tidings export /stocks/euronext/CTT > ctt.car")]
    Export {
        /// The topic.
        topic: String,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Import a CAR v1 file; all-or-nothing: one bad block and nothing is stored.
    #[command(after_help = "Example:\n  tidings import ctt.car")]
    Import {
        /// The CAR file (`-` for stdin).
        file: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Import a topic's stream into the node's IPFS backend and pin its heads; prints the heads.
    #[command(after_help = "Example:\n  tidings pin /stocks/euronext/CTT\n  \
ipfs dag get <HEAD>/prev/0        # then any IPFS tool walks the stream back from a head\n\n\
Needs a node started with --ipfs-api URL (or TIDINGS_IPFS_API). The stream as the node holds it\n\
goes to IPFS as a CAR file (dag/import), its heads pinned recursively, so IPFS keeps all of\n\
its history; run it again after new events to pin the new heads.")]
    Pin {
        /// The topic.
        topic: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show the node's peer id, role, addresses, peers, rendezvous roots, subscriptions and store.
    #[command(
        after_help = "Examples:\n  tidings status\n  tidings status --json   # the API's /v1/status"
    )]
    Status {
        /// Print the API's JSON instead of the summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// Options of `tidings node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Data directory: identity key, store, api.addr. Created if missing.
    #[arg(long, default_value = "./tidings-data", value_name = "DIR")]
    pub data: PathBuf,
    /// Address for the HTTP API: HOST:PORT or http://HOST:PORT. Port 0 picks a free port
    /// (written to DIR/api.addr).
    #[arg(
        long = "api",
        default_value = DEFAULT_API_ADDR,
        value_name = "ADDR",
        value_parser = addr::parse_listen
    )]
    pub api: std::net::SocketAddr,
    /// Bearer token clients must send; required when --api is not a loopback address.
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Let browser pages from this origin (like `https://app.example`) use the API; repeatable;
    /// '*' for any. Off by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// libp2p listen address; repeat for several (TCP and QUIC by default).
    #[arg(long, value_name = "MULTIADDR", default_values_t = default_listen())]
    pub listen: Vec<Multiaddr>,
    /// A node to join through, as MULTIADDR/p2p/PEER_ID (see `tidings status`); repeatable.
    #[arg(long, value_name = "MULTIADDR/p2p/ID")]
    pub bootstrap: Vec<Multiaddr>,
    /// broker: always on, holds rendezvous duty; peer: a client that publishes, subscribes and
    /// serves the blocks it holds.
    #[arg(long, default_value = "broker", value_name = "broker|peer")]
    pub role: Role,
    /// Rendezvous set size K: brokers that hold each root's subscriptions and events.
    #[arg(long, default_value_t = DEFAULT_REPLICATION as u64, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=32))]
    pub replication: u64,
    /// Events older than this leave each root's replay log (and their blocks go, except heads
    /// and this node's own events); e.g. 7d. Default: keep everything.
    #[arg(long, value_name = "AGE")]
    pub retain_age: Option<Age>,
    /// The oldest events leave a root's replay log while it holds more than this; e.g. 10G.
    /// Default: no limit.
    #[arg(long, value_name = "SIZE")]
    pub retain_bytes: Option<Size>,
    /// A durable subscription unused for this long is deleted.
    #[arg(long, value_name = "AGE", default_value = "7d")]
    pub durable_expiry: Age,
    /// How often a broker compares each root's streams and durable subscriptions with the other
    /// members of its rendezvous set and pulls what it lacks (after a restart, a partition, or
    /// on joining a set).
    #[arg(long, value_name = "AGE", default_value = "5s")]
    pub sync_interval: Age,
    /// Requests per second one peer may send this node on the tidings protocols (bursts of
    /// twice that pass). Past it its requests are refused; a peer that keeps on is disconnected
    /// and refused for 10 minutes as a flooder.
    #[arg(long, value_name = "N", default_value_t = tidings_node::net::limits::DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_request_rate: u32,
    /// An IPFS node's HTTP RPC, as http://HOST:PORT or its multiaddr (/ip4/127.0.0.1/tcp/5001):
    /// every block stored here is mirrored into it (never delaying a publish), and history no
    /// tidings peer has is fetched from it and verified. `tidings pin TOPIC` pins a stream there.
    #[arg(long, env = "TIDINGS_IPFS_API", value_name = "URL", value_parser = parse_ipfs_api)]
    pub ipfs_api: Option<String>,
}

/// Checks `--ipfs-api` when the command line is read, so a typo is refused before anything
/// starts.
fn parse_ipfs_api(s: &str) -> Result<String, String> {
    tidings_node::ipfs::parse_api_url(s)
}

/// A duration on the command line: `90s`, `15m`, `12h`, `7d`.
#[derive(Debug, Clone, Copy)]
pub struct Age(pub std::time::Duration);

impl std::str::FromStr for Age {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let secs = tidings_node::age::age_secs(s)?;
        if secs == 0 {
            return Err(format!("{s:?}: must be more than zero"));
        }
        Ok(Age(std::time::Duration::from_secs(secs)))
    }
}

/// A size on the command line: bytes, or with K, M, G (powers of 1024).
#[derive(Debug, Clone, Copy)]
pub struct Size(pub u64);

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: want a number, optionally with K, M or G"))?;
        let mult = match unit {
            "" => 1,
            "K" | "k" => 1 << 10,
            "M" | "m" => 1 << 20,
            "G" | "g" => 1 << 30,
            _ => return Err(format!("{s:?}: the unit must be K, M or G")),
        };
        Ok(Size(n.saturating_mul(mult)))
    }
}

fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/7800", "/ip4/0.0.0.0/udp/7800/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}
