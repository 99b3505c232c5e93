//! nats-server, core and JetStream, through the `async-nats` client (it sets TCP_NODELAY).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use super::Started;
use crate::harness::{Publisher, Subscribers, record_until_stopped};
use crate::orders::Order;
use crate::procs::{Proc, find_binary, free_port};
use crate::proxy;

const NATS_CONF: &str = include_str!("../../conf/nats.conf");
const JETSTREAM_CONF: &str = include_str!("../../conf/jetstream.conf");
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

/// Starts nats-server (with JetStream if `js`) in `work`, the publisher's connection, and one
/// connection per subscriber: core subscriptions on `stocks.>`, or JetStream ordered consumers
/// on the stream delivering new messages.
pub async fn start(
    js: bool,
    subs: &mut Subscribers,
    work: &Path,
) -> Result<Started<NatsPublisher>> {
    let bin = find_binary("nats-server", "NATS_SERVER")?;
    let port = free_port()?;
    let conf = work.join("nats.conf");
    std::fs::write(&conf, if js { JETSTREAM_CONF } else { NATS_CONF })?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(&conf)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    if js {
        cmd.arg("-js").arg("-sd").arg(work.join("jetstream"));
    }
    let mut server = Proc::spawn(cmd, &work.join("nats-server.log"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    server.wait_tcp(addr, Duration::from_secs(20)).await?;

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
        guard: Box::new((proxy, server)),
    })
}
