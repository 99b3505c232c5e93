//! A plain rust-libp2p client, with nothing of tidings in it (identify and ping only), connects
//! to a real node process over TCP and over QUIC, identifies it — seeing the Kademlia and
//! `/tidings/` protocols — and pings it.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, identify, noise, ping, tcp, yamux};
use tidings_tests::NodeProcess;

#[derive(NetworkBehaviour)]
struct Client {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

async fn probe(addr: Multiaddr) -> Result<Vec<String>> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_behaviour(|key| Client {
            identify: identify::Behaviour::new(identify::Config::new(
                "/probe/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
        })?
        .build();
    swarm.dial(addr.clone())?;
    let mut protocols = None;
    let mut pinged = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while protocols.is_none() || !pinged {
        let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .with_context(|| format!("no identify and ping from {addr} within 30 s"))?;
        match ev {
            SwarmEvent::Behaviour(ClientEvent::Identify(identify::Event::Received {
                info,
                ..
            })) => {
                ensure!(
                    info.agent_version.starts_with("tidings/"),
                    "agent {}",
                    info.agent_version
                );
                protocols = Some(
                    info.protocols
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>(),
                );
            }
            SwarmEvent::Behaviour(ClientEvent::Ping(ping::Event {
                result: Ok(rtt), ..
            })) => {
                ensure!(rtt < Duration::from_secs(5));
                pinged = true;
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial {addr}: {error}"),
            _ => {}
        }
    }
    Ok(protocols.unwrap_or_default())
}

#[test]
fn a_standard_libp2p_client_identifies_and_pings_a_node_over_tcp_and_quic() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(
        dir.path(),
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ],
    )?;
    let status = node.status()?;
    let listen: Vec<Multiaddr> = status["listen"]
        .as_array()
        .context("listen")?
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();
    let tcp = listen
        .iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .context("no TCP address")?;
    let quic = listen
        .iter()
        .find(|a| a.to_string().contains("/quic-v1"))
        .context("no QUIC address")?;
    for addr in [tcp, quic] {
        let protocols = rt.block_on(probe(addr.clone()))?;
        for want in [
            "/tidings/kad/1.0.0",
            "/tidings/publish/2",
            "/tidings/replicate/1",
            "/tidings/subscribe/1",
            "/tidings/deliver/1",
            "/ipfs/ping/1.0.0",
            "/ipfs/id/1.0.0",
        ] {
            ensure!(
                protocols.iter().any(|p| p == want),
                "{addr}: {want} missing from {protocols:?}"
            );
        }
    }
    // The node is still fine afterwards.
    ensure!(node.status().is_ok());
    Ok(())
}
