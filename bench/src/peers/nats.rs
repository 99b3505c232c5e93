//! nats-server, core and JetStream (default sync, and fsync before every ack), through the
//! `async-nats` client (it sets TCP_NODELAY).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use super::Started;
use crate::harness::{Publisher, Subscribers, record_until_stopped};
use crate::machine::first_line;
use crate::orders::Order;
use crate::procs::{Proc, find_binary, free_port};
use crate::proxy;

const NATS_CONF: &str = include_str!("../../conf/nats.conf");
const JETSTREAM_CONF: &str = include_str!("../../conf/jetstream.conf");
const JETSTREAM_SYNC_CONF: &str = include_str!("../../conf/jetstream-sync.conf");
const STREAM: &str = "STOCKS";
const WILDCARD: &str = "stocks.>";

/// Core publish (buffered by the client; `flush` pushes it out) or JetStream publish (returns
/// once the server's acknowledgement came back).
#[derive(Clone)]
pub struct NatsPublisher {
    client: async_nats::Client,
    js: Option<jetstream::Context>,
}

impl Publisher for NatsPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        match &self.js {
            None => self
                .client
                .publish(o.subject(), o.body.clone().into())
                .await
                .context("nats publish")?,
            Some(js) => {
                js.publish(o.subject(), o.body.clone().into())
                    .await
                    .context("jetstream publish")?
                    .await
                    .context("jetstream ack")?;
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.client.flush().await.context("nats flush")
    }
}

/// How nats-server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Core publish/subscribe.
    Core,
    /// JetStream, file store, the server's default sync.
    JetStream,
    /// JetStream, file store, `sync_interval: always` (fsync before each ack).
    JetStreamSync,
}

/// The oldest nats-server that knows `sync_interval` (2.9 refuses the field).
pub const SYNC_ALWAYS_SINCE: (u32, u32) = (2, 10);

/// `nats-server: v2.15.1` → (2, 15, 1).
pub fn parse_version(line: &str) -> Option<(u32, u32, u32)> {
    let v = line.rsplit(['v', ' ']).next()?;
    let mut it = v.trim().split('.').map(|x| x.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// The nats-server binary (`$NATS_SERVER`, else on `PATH` or in /usr/sbin) and its version
/// line; fails if `mode` needs a newer server than that.
pub fn server_for(mode: Mode) -> Result<(std::path::PathBuf, String)> {
    let bin = find_binary("nats-server", "NATS_SERVER")?;
    let version = first_line(&bin.display().to_string(), &["--version"]);
    if mode == Mode::JetStreamSync {
        let (major, minor, _) = parse_version(&version)
            .with_context(|| format!("{} --version printed {version:?}", bin.display()))?;
        ensure!(
            (major, minor) >= SYNC_ALWAYS_SINCE,
            "jetstream-sync needs nats-server {}.{} or later (`sync_interval: always`); {} is \
             {version}: run bench/compare.sh (it installs a current one) or set NATS_SERVER",
            SYNC_ALWAYS_SINCE.0,
            SYNC_ALWAYS_SINCE.1,
            bin.display()
        );
    }
    Ok((bin, version))
}

/// Whether the server at monitoring port `mport` fsyncs every JetStream write, as its /varz
/// reports (`jetstream.config.sync_always`, absent before 2.10: false).
async fn sync_always(mport: u16) -> Result<bool> {
    let url = format!("http://127.0.0.1:{mport}/varz");
    let v: serde_json::Value = reqwest::get(&url)
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("{url}: not JSON"))?;
    Ok(v["jetstream"]["config"]["sync_always"]
        .as_bool()
        .unwrap_or(false))
}

/// Starts nats-server in `mode` in `work`, the publisher's connection, and one connection per
/// subscriber: core subscriptions on `stocks.>`, or JetStream ordered consumers on the stream
/// delivering new messages. For JetStream, checks on the server's /varz that it syncs as `mode`
/// says before anything is measured.
pub async fn start(
    mode: Mode,
    subs: &mut Subscribers,
    work: &Path,
) -> Result<Started<NatsPublisher>> {
    let (bin, _) = server_for(mode)?;
    let js = mode != Mode::Core;
    let port = free_port()?;
    let mport = free_port()?;
    let conf = work.join("nats.conf");
    std::fs::write(
        &conf,
        match mode {
            Mode::Core => NATS_CONF,
            Mode::JetStream => JETSTREAM_CONF,
            Mode::JetStreamSync => JETSTREAM_SYNC_CONF,
        },
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf).args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &mport.to_string(),
    ]);
    if js {
        cmd.arg("-js").arg("-sd").arg(work.join("jetstream"));
    }
    let mut server = Proc::spawn(cmd, &work.join("nats-server.log"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    server.wait_tcp(addr, Duration::from_secs(20)).await?;
    if js {
        let want = mode == Mode::JetStreamSync;
        let got = sync_always(mport).await?;
        ensure!(
            got == want,
            "nats-server reports sync_always = {got}, the {mode:?} configuration wants {want}"
        );
    }

    let client = async_nats::connect(addr.to_string())
        .await
        .context("connecting to nats")?;
    let ctx = js.then(|| jetstream::new(client.clone()));
    let stream = match &ctx {
        Some(ctx) => Some(
            ctx.create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![WILDCARD.into()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("creating the JetStream stream")?,
        ),
        None => None,
    };

    // Subscribers connect through the byte-counting proxy when bytes are counted.
    let proxy = match &subs.bytes {
        Some(c) => Some(proxy::start(addr, c.clone()).await?),
        None => None,
    };
    let sub_addr = proxy.as_ref().map_or(addr, |p| p.addr);
    let mut handles = Vec::new();
    for (k, rec) in subs.take().into_iter().enumerate() {
        let c = async_nats::connect(sub_addr.to_string())
            .await
            .context("connecting a nats subscriber")?;
        let stop = subs.stop.clone();
        match &stream {
            None => {
                let sub = c.subscribe(WILDCARD).await.context("nats subscribe")?;
                handles.push(tokio::spawn(async move {
                    let r = record_until_stopped(rec, stop, sub.map(|m| m.payload)).await;
                    drop(c);
                    Some(r)
                }));
            }
            Some(_) => {
                // The consumer is created over the subscriber's own connection, so its
                // deliveries flow through the proxy too.
                let st = jetstream::new(c.clone())
                    .get_stream(STREAM)
                    .await
                    .context("jetstream get_stream")?;
                let cons = st
                    .create_consumer(consumer::pull::OrderedConfig {
                        name: Some(format!("bench-{k}")),
                        filter_subject: WILDCARD.into(),
                        deliver_policy: consumer::DeliverPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .context("creating a jetstream ordered consumer")?;
                let msgs = cons.messages().await.context("jetstream messages")?;
                handles.push(tokio::spawn(async move {
                    // An error item (a consumer being recreated) carries no event: record
                    // nothing for it and go on.
                    let payloads = msgs.map(|m| m.map(|m| m.payload.clone()).unwrap_or_default());
                    let r = record_until_stopped(rec, stop, payloads).await;
                    drop(c);
                    Some(r)
                }));
            }
        }
    }
    Ok(Started {
        publisher: NatsPublisher { client, js: ctx },
        handles,
        servers: vec![server.id()],
        guard: Box::new((proxy, server)),
    })
}
