//! mosquitto, QoS 0 or QoS 1 with persistence, through the `rumqttc` client (TCP_NODELAY set
//! explicitly: rumqttc leaves Nagle on by default, which costs MQTT milliseconds at 5k msg/s).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};
use tokio::sync::oneshot;

use super::Started;
use crate::harness::{Publisher, Recorder, Subscribers};
use crate::orders::Order;
use crate::procs::{Proc, find_binary, free_port};
use crate::proxy;

const QOS0_CONF: &str = include_str!("../../conf/mosquitto-qos0.conf");
const QOS1_CONF: &str = include_str!("../../conf/mosquitto-qos1.conf");
const WILDCARD: &str = "stocks/#";

/// Waiters for PUBACKs: publishes queued in order (`order`), then keyed by packet id once the
/// event loop sent them (`by_pkid`).
#[derive(Default)]
struct Acks {
    order: VecDeque<oneshot::Sender<()>>,
    by_pkid: HashMap<u16, oneshot::Sender<()>>,
}

#[derive(Clone)]
pub struct MqttPublisher {
    client: AsyncClient,
    qos: QoS,
    acks: Arc<Mutex<Acks>>,
    /// Serialises "queue the waiter, hand the publish to the client" so the waiters' order is
    /// the order rumqttc sends (and numbers) the publishes in.
    send: Arc<tokio::sync::Mutex<()>>,
}

impl Publisher for MqttPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        if self.qos == QoS::AtMostOnce {
            return self
                .client
                .publish(o.mqtt_topic(), self.qos, false, o.body.clone())
                .await
                .context("mqtt publish");
        }
        let (tx, rx) = oneshot::channel();
        {
            let _g = self.send.lock().await;
            self.acks
                .lock()
                .map_err(|_| anyhow!("mqtt ack table poisoned"))?
                .order
                .push_back(tx);
            self.client
                .publish(o.mqtt_topic(), self.qos, false, o.body.clone())
                .await
                .context("mqtt publish")?;
        }
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("no PUBACK within 30 s")?
            .context("mqtt connection gone before PUBACK")
    }
}

fn options(id: &str, host_addr: SocketAddr, clean: bool, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, host_addr.ip().to_string(), host_addr.port());
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(clean)
        .set_inflight(inflight)
        .set_request_channel_capacity(4096);
    o
}

fn event_loop(opts: MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
    let (client, mut el) = AsyncClient::new(opts, cap);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    (client, el)
}

/// Polls the publisher's event loop: matches PUBACKs to waiters.
async fn publisher_loop(mut el: EventLoop, acks: Arc<Mutex<Acks>>, track: bool) {
    let mut reported = false;
    loop {
        match el.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if track => {
                if let Ok(mut a) = acks.lock()
                    && let Some(w) = a.order.pop_front()
                {
                    a.by_pkid.insert(pkid, w);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(pa))) if track => {
                if let Ok(mut a) = acks.lock()
                    && let Some(w) = a.by_pkid.remove(&pa.pkid)
                {
                    let _ = w.send(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !reported {
                    eprintln!("  mqtt publisher connection: {e}");
                    reported = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Polls a subscriber's event loop until stopped, recording every PUBLISH payload.
async fn subscriber_loop(
    mut el: EventLoop,
    mut rec: Recorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<Recorder> {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => rec.on_message(&p.payload, Instant::now()),
                Ok(_) => {}
                // rumqttc reconnects on the next poll; a lost connection shows as lost events.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    Some(rec)
}

/// Starts mosquitto (the QoS 1 config has persistence on) in `work`, a publisher and the
/// subscribers (on `stocks/#` at the same QoS; QoS 1 subscribers keep a persistent session).
pub async fn start(
    qos1: bool,
    lanes: usize,
    subs: &mut Subscribers,
    work: &Path,
) -> Result<Started<MqttPublisher>> {
    let bin = find_binary("mosquitto", "MOSQUITTO")?;
    let port = free_port()?;
    let conf = work.join("mosquitto.conf");
    let text = if qos1 { QOS1_CONF } else { QOS0_CONF }
        .replace("{port}", &port.to_string())
        .replace("{dir}", &work.display().to_string());
    std::fs::write(&conf, text)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    let mut server = Proc::spawn(cmd, &work.join("mosquitto.log"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    server.wait_tcp(addr, Duration::from_secs(20)).await?;

    let qos = if qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    // Enough in flight for every lane (rumqttc holds back publishes beyond its window).
    let inflight = lanes.clamp(10, u16::MAX as usize) as u16;
    let (client, el) = event_loop(options("bench-pub", addr, true, inflight), 4096);
    let acks = Arc::new(Mutex::new(Acks::default()));
    let pub_task = tokio::spawn(publisher_loop(el, acks.clone(), qos1));

    let proxy = match &subs.bytes {
        Some(c) => Some(proxy::start(addr, c.clone()).await?),
        None => None,
    };
    let sub_addr = proxy.as_ref().map_or(addr, |p| p.addr);
    let mut handles = Vec::new();
    let mut sub_clients = Vec::new();
    for (k, rec) in subs.take().into_iter().enumerate() {
        let (c, el) = event_loop(options(&format!("bench-sub-{k}"), sub_addr, !qos1, 100), 64);
        c.subscribe(WILDCARD, qos).await.context("mqtt subscribe")?;
        sub_clients.push(c);
        handles.push(tokio::spawn(subscriber_loop(el, rec, subs.stop.clone())));
    }
    Ok(Started {
        publisher: MqttPublisher {
            client,
            qos,
            acks,
            send: Arc::new(tokio::sync::Mutex::new(())),
        },
        handles,
        servers: vec![server.id()],
        guard: Box::new((AbortOnDrop(pub_task), sub_clients, proxy, server)),
    })
}

/// Aborts a background task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
