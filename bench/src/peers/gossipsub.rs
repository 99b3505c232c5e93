//! rust-libp2p gossipsub: swarms in the bench process (own tokio tasks), TCP + Noise + Yamux on
//! loopback, signed messages with strict validation.
//!
//! Topologies: one subscriber → a line A—B—C (C subscribes, two hops from the publisher A, as
//! tidings' subscriber is from its publisher); k subscribers → a star, k subscriber swarms each
//! dialing A (gossipsub's flood publishing sends A's own messages to every peer).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, PublishError, ValidationMode};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::Started;
use crate::harness::{Publisher, Recorder, Subscribers};
use crate::orders::Order;
use crate::procs::poll_until;
use crate::proxy;

pub enum Cmd {
    Publish(Vec<u8>, oneshot::Sender<Result<()>>),
    MeshPeers(oneshot::Sender<usize>),
}

/// Hands A the body; returns once A's `publish` accepted it (retried while its queues are full).
#[derive(Clone)]
pub struct GossipPublisher {
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl Publisher for GossipPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Publish(o.body.as_bytes().to_vec(), tx))
            .ok()
            .context("gossipsub node A is gone")?;
        rx.await.context("gossipsub node A is gone")?
    }
}

/// Mesh degree bounds: (low, target, high).
fn swarm(mesh: (usize, usize, usize)) -> Result<Swarm<gossipsub::Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let cfg = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::Strict)
                // The default message id (author + sequence number), not a hash of the data:
                // gossipsub enters a message in its duplicate cache before it finds all queues
                // full, so a retried publish of the same data would be refused as a duplicate.
                .mesh_n_low(mesh.0)
                .mesh_n(mesh.1)
                .mesh_n_high(mesh.2)
                .mesh_outbound_min(0)
                .gossip_lazy(2)
                .heartbeat_interval(Duration::from_millis(200))
                .build()?;
            Ok(gossipsub::Behaviour::new(
                MessageAuthenticity::Signed(key.clone()),
                cfg,
            )?)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Runs one swarm: serves commands, records deliveries into `rec` (if it subscribes for the
/// measurement) until stopped; returns the recorder.
async fn node(
    mut swarm: Swarm<gossipsub::Behaviour>,
    topic: IdentTopic,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut rec: Option<Recorder>,
    mut stop: watch::Receiver<bool>,
    listening: oneshot::Sender<Multiaddr>,
) -> Option<Recorder> {
    let mut listening = Some(listening);
    let th = topic.hash();
    let mut pending: VecDeque<(Vec<u8>, oneshot::Sender<Result<()>>)> = VecDeque::new();
    let mut retry = tokio::time::interval(Duration::from_millis(1));
    loop {
        // Publish what is queued; stop at the first full queue and retry shortly.
        while let Some((data, ack)) = pending.pop_front() {
            match swarm.behaviour_mut().publish(topic.clone(), data.clone()) {
                Ok(_) => {
                    let _ = ack.send(Ok(()));
                }
                Err(PublishError::AllQueuesFull(_)) => {
                    pending.push_front((data, ack));
                    break;
                }
                Err(e) => {
                    let _ = ack.send(Err(anyhow::anyhow!("gossipsub publish: {e}")));
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return rec,
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => {
                    if let Some(l) = listening.take() {
                        let _ = l.send(address);
                    }
                }
                SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                    if let Some(r) = rec.as_mut() {
                        r.on_message(&message.data, Instant::now());
                    }
                }
                _ => {}
            },
            c = cmds.recv() => match c {
                Some(Cmd::Publish(data, ack)) => pending.push_back((data, ack)),
                Some(Cmd::MeshPeers(tx)) => {
                    let _ = tx.send(swarm.behaviour().mesh_peers(&th).count());
                }
                None => return rec,
            },
            _ = retry.tick(), if !pending.is_empty() => {}
        }
    }
}

/// Aborts the swarm tasks still running on drop.
struct Tasks(Vec<JoinHandle<Option<Recorder>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts the swarms for `subs` (see the module doc for the topology); C's link to B (line) goes
/// through the byte-counting proxy when bytes are counted.
pub async fn start(subs: &mut Subscribers) -> Result<Started<GossipPublisher>> {
    let topic = IdentTopic::new("/stocks");
    let recs = subs.take();
    let k = recs.len();
    let line = k == 1;
    // Line: A and C mesh with B, B with both. Star: A meshes with all k, each subscriber with A.
    let (mesh, want): ((usize, usize, usize), Vec<usize>) = if line {
        ((1, 2, 2), vec![1, 2, 1])
    } else {
        (
            (1, k, k + 2),
            std::iter::once(k)
                .chain(std::iter::repeat_n(1, k))
                .collect(),
        )
    };
    // Relay-only nodes (B in the line) get no recorder; subscriber nodes get one each.
    let mut slots: Vec<Option<Recorder>> = if line {
        vec![None, None, recs.into_iter().next()]
    } else {
        std::iter::once(None)
            .chain(recs.into_iter().map(Some))
            .collect()
    };
    let mut tasks = Vec::new();
    let mut cmds = Vec::new();
    let mut addrs: Vec<(PeerId, Multiaddr)> = Vec::new();
    let mut proxy_guard = None;
    for i in 0..slots.len() {
        let mut sw = swarm(mesh)?;
        sw.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        sw.behaviour_mut().subscribe(&topic)?;
        if i > 0 {
            // Line: each dials the one before. Star: each dials A.
            let (peer, addr) = if line { &addrs[i - 1] } else { &addrs[0] };
            let mut addr = addr.clone();
            if line
                && i == 2
                && let Some(c) = &subs.bytes
            {
                let upstream = addr.iter().fold((None, None), |(ip, port), p| match p {
                    Protocol::Ip4(a) => (Some(a), port),
                    Protocol::Tcp(p) => (ip, Some(p)),
                    _ => (ip, port),
                });
                let (Some(ip), Some(port)) = upstream else {
                    anyhow::bail!("gossipsub listen address {addr} is not /ip4/../tcp/..");
                };
                let p = proxy::start((ip, port).into(), c.clone()).await?;
                addr = format!("/ip4/127.0.0.1/tcp/{}", p.addr.port()).parse()?;
                proxy_guard = Some(p);
            }
            sw.dial(addr.with(Protocol::P2p(*peer)))?;
        }
        let peer = *sw.local_peer_id();
        let (ctx, crx) = mpsc::unbounded_channel();
        let (ltx, lrx) = oneshot::channel();
        tasks.push(tokio::spawn(node(
            sw,
            topic.clone(),
            crx,
            slots[i].take(),
            subs.stop.clone(),
            ltx,
        )));
        cmds.push(ctx);
        let addr = tokio::time::timeout(Duration::from_secs(10), lrx)
            .await
            .context("gossipsub swarm never listened")??;
        addrs.push((peer, addr));
    }
    let cmds2 = cmds.clone();
    poll_until(Duration::from_secs(30), "the gossipsub mesh", || {
        let cmds = cmds2.clone();
        let want = want.clone();
        async move {
            for (c, w) in cmds.iter().zip(want) {
                let (tx, rx) = oneshot::channel();
                c.send(Cmd::MeshPeers(tx)).ok()?;
                if rx.await.ok()? < w {
                    return None;
                }
            }
            Some(())
        }
    })
    .await?;

    // The subscriber nodes' tasks hand their recorders back when stopped; the relay's and the
    // publisher's are kept only to be stopped.
    let mut handles = Vec::new();
    let mut others = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let subscriber = if line { i == 2 } else { i > 0 };
        if subscriber {
            handles.push(t);
        } else {
            others.push(t);
        }
    }
    Ok(Started {
        publisher: GossipPublisher {
            cmd: cmds[0].clone(),
        },
        handles,
        guard: Box::new((Tasks(others), cmds, proxy_guard)),
        servers: Vec::new(),
    })
}
