//! Command-line interface: argument definitions and the client commands.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use serde_json::Value;
use tidings_node::client::{Client, DEFAULT_API};
use tidings_node::net::Role;
use tidings_node::net::rendezvous::DEFAULT_REPLICATION;

/// tidings: content-based publish/subscribe over IPLD. Every event is a signed, content-addressed
/// block; a single node with its embedded store is a complete network.
#[derive(Parser, Debug)]
#[command(name = "tidings", version, propagate_version = true)]
#[command(after_help = "Start a node:        tidings node\n\
Publish an event:    tidings pub /stocks/euronext/CTT '{\"price\": 5.55, \"order\": \"buy\"}'\n\
Read it back:        tidings get <CID>\n\
Environment: TIDINGS_API (client commands' node URL), TIDINGS_TOKEN (bearer token), RUST_LOG (log filter).")]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the client commands find a node.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// URL of the node's HTTP API.
    #[arg(long = "api", env = "TIDINGS_API", default_value = DEFAULT_API, value_name = "URL")]
    pub api: String,
    /// Bearer token, needed when the node's API is not on loopback.
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientOpts {
    fn client(&self) -> Client {
        Client::new(&self.api, self.token.clone())
    }
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: embedded store in --data, HTTP API on --api.
    #[command(
        after_help = "Example:\n  tidings node                                  # ./tidings-data, API on 127.0.0.1:7700\n  tidings node --data /var/lib/tidings --api 127.0.0.1:0   # any free port; see DIR/api.addr\n\nStops cleanly on Ctrl-C, SIGTERM or SIGHUP."
    )]
    Node(NodeArgs),
    /// Start a local network of N nodes on loopback (in a temp dir) and print their API addresses.
    #[command(
        after_help = "Examples:\n  tidings devnet                      # 3 brokers, APIs on 127.0.0.1:7710..7712\n  tidings devnet --nodes 5 --peers 1  # 4 brokers and a peer\n\nCtrl-C, SIGTERM or SIGHUP stops every node (SIGTERM, 10 s to finish) and removes the directory;\nif the devnet itself is killed, the kernel stops its nodes."
    )]
    Devnet(crate::devnet::DevnetArgs),
    /// Publish an event; prints its CID. With `-` as JSON, publishes each line of stdin.
    #[command(
        after_help = "Examples:\n  tidings pub /stocks/euronext/CTT '{\"order\": \"buy\", \"number\": 100, \"price\": 5.55}'\n  printf '{\"n\":1}\\n{\"n\":2}\\n' | tidings pub /demo -      # one CID per line"
    )]
    Pub {
        /// Topic, e.g. /stocks/euronext/CTT (1-16 segments, no wildcards).
        topic: String,
        /// The event body as JSON, or `-` to read JSON lines from stdin.
        json: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Subscribe with a filter; prints each matching event as one JSON line, as it is published.
    #[command(
        after_help = "Examples:\n  tidings sub '/stocks/** where order = \"buy\" and price < 10'\n  tidings sub --durable orders '/stocks/** where order = \"buy\"'   # keeps what you miss\n  tidings sub --from-start /docs/**          # stored history first, then live\n  tidings sub --since 15m /docs/**\n  tidings sub '{\"topic\": \"/stocks/**\", \"order\": \"buy\", \"number\": \">50\", \"price\": \"<10\"}'\n  tidings sub '{\"topic\": \"/stocks/**\", \"price\": {\"$lt\": 10}}'\n  tidings sub /fruits/citrus/**\n\nFilters: `=` `!=` `<` `<=` `>` `>=` `in [..]` `exists` `prefix`, `and` `or` `not` and parentheses;\ndotted paths (a.b.c) or JSONPath ($.legs[*].price). Topic patterns: `*` one segment, `**` (last) any."
    )]
    Sub {
        /// The filter: text form, the seeds' JSON form, or Mongo-style JSON.
        filter: String,
        /// A durable subscription: the network keeps what you miss while away and sends it when
        /// you come back with the same name (and filter). Over this stream an event counts as
        /// acknowledged once printed.
        #[arg(long, value_name = "NAME")]
        durable: Option<String>,
        /// Stored events from TIME first, then live ones: milliseconds since the Unix epoch, or
        /// an age like 90s, 15m, 2h, 7d.
        #[arg(long, value_name = "TIME", conflicts_with = "from_start")]
        since: Option<String>,
        /// Every stored event first, then live ones (same as --since 0).
        #[arg(long)]
        from_start: bool,
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
    /// Print one event as JSON.
    #[command(after_help = "Example:\n  tidings get bafyreib...")]
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
    /// Print the current heads of a topic's stream.
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
    /// Show the node's peer id, role, rendezvous roots, subscriptions and store size.
    #[command(after_help = "Example:\n  tidings status")]
    Status {
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
    /// Address for the HTTP API. Port 0 picks a free port (written to DIR/api.addr).
    #[arg(
        long = "api",
        default_value = "127.0.0.1:7700",
        value_name = "HOST:PORT"
    )]
    pub api: SocketAddr,
    /// Bearer token clients must send; required when --api is not a loopback address.
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
}

/// A duration on the command line: `90s`, `15m`, `12h`, `7d`.
#[derive(Debug, Clone, Copy)]
pub struct Age(pub std::time::Duration);

/// Seconds in an age like `90s`, `15m`, `12h`, `7d`.
fn age_secs(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: want a number and a unit, like 90s, 15m, 12h or 7d"))?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(n.saturating_mul(per))
}

impl std::str::FromStr for Age {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let secs = age_secs(s)?;
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

/// Runs a client command.
pub async fn run_client(command: Command) -> Result<()> {
    match command {
        Command::Node(_) => unreachable!("handled by main"),
        Command::Devnet(args) => crate::devnet::run(args).await,
        Command::Pub {
            topic,
            json,
            client,
        } => publish(&client.client(), &topic, &json).await,
        Command::Sub {
            filter,
            durable,
            since,
            from_start,
            client,
        } => {
            let since = match (since, from_start) {
                (_, true) => Some(0),
                (Some(t), false) => Some(parse_since(&t)?),
                (None, false) => None,
            };
            subscribe(&client.client(), &filter, durable.as_deref(), since).await
        }
        Command::UnsubDurable { name, client } => {
            client.client().delete_durable(&name).await?;
            eprintln!("deleted durable subscription {name}");
            Ok(())
        }
        Command::Get { cid, client } => print_json(&client.client().event(&cid).await?),
        Command::Heads { topic, client } => {
            let v = client.client().heads(&topic).await?;
            for h in v
                .get("heads")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!("{}", h.as_str().unwrap_or_default());
            }
            Ok(())
        }
        Command::Export {
            topic,
            output,
            client,
        } => {
            let car = client.client().export(&topic).await?;
            match output {
                Some(path) => std::fs::write(&path, &car)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    let mut out = std::io::stdout().lock();
                    if out.is_terminal() {
                        bail!(
                            "refusing to write a binary CAR file to a terminal: redirect stdout or use --output FILE"
                        );
                    }
                    out.write_all(&car)?;
                    out.flush()?;
                }
            }
            eprintln!("exported {} bytes of {topic}", car.len());
            Ok(())
        }
        Command::Import { file, client } => {
            let bytes = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            print_json(&client.client().import(bytes).await?)
        }
        Command::Status { client } => print_json(&client.client().status().await?),
        Command::Fetch {
            cid,
            until,
            json,
            client,
        } => fetch(&client.client(), &cid, &until, json).await,
    }
}

/// `tidings fetch`: follows the node's progress lines (a bar on a terminal), then the summary.
async fn fetch(client: &Client, cid: &str, until: &[String], as_json: bool) -> Result<()> {
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
        println!(
            "fetched {} blocks ({:.1} MB) from {sources} peer(s) in {:.2} s: {} verified, {} new, {} held already; {}",
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
            "history incomplete: no peer asked had {} block(s), first {}",
            missing.len(),
            missing[0]
        );
    }
    Ok(())
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `--since`: milliseconds since the epoch, or an age (`90s`, `15m`, `2h`, `7d`) before now.
fn parse_since(t: &str) -> Result<u64> {
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(ms);
    }
    let secs = age_secs(t)
        .map_err(|e| anyhow::anyhow!("--since {e} (or milliseconds since the epoch)"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(now.saturating_sub(secs.saturating_mul(1000)))
}

/// `tidings sub`: prints `data` of each SSE event as one line; an `error` event ends it.
async fn subscribe(
    client: &Client,
    filter: &str,
    durable: Option<&str>,
    since: Option<u64>,
) -> Result<()> {
    use futures::StreamExt;
    let resp = client.subscribe_sse(filter, durable, since).await?;
    eprintln!("subscribed: {filter}");
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("the subscription stream broke")?);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if event == "error" {
                    bail!("{data}");
                }
                if !data.is_empty() {
                    writeln!(out, "{data}")?;
                    out.flush()?;
                }
                event.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            }
        }
    }
    bail!("the node closed the subscription")
}

/// `tidings pub`: one event from the argument, or one per stdin line, in order.
async fn publish(client: &Client, topic: &str, json: &str) -> Result<()> {
    if json != "-" {
        let body: Value = serde_json::from_str(json).context("the event body is not valid JSON")?;
        let r = client.publish(topic, &body).await?;
        println!(
            "{}",
            r.get("cid").and_then(Value::as_str).unwrap_or_default()
        );
        return Ok(());
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    // Publish strictly one after another: the node assigns seq in arrival order.
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let body: Value = serde_json::from_str(&line).with_context(|| {
            format!(
                "stdin line {}: not valid JSON; stopped here, earlier lines were published",
                i + 1
            )
        })?;
        let r = client.publish(topic, &body).await.with_context(|| {
            format!(
                "stdin line {}: stopped here, earlier lines were published",
                i + 1
            )
        })?;
        writeln!(
            out,
            "{}",
            r.get("cid").and_then(Value::as_str).unwrap_or_default()
        )?;
        out.flush()?;
    }
    Ok(())
}
