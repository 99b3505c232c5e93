//! A loopback TCP proxy that counts the bytes flowing from the server to the client: what a
//! subscriber's connection really received, protocol framing included, whatever the protocol
//! (NATS, MQTT, HTTP/SSE, libp2p with Noise and Yamux).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Listens on 127.0.0.1 (OS-chosen port) until dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards every connection made to the returned address to `upstream`, adding the bytes sent
/// downstream (server → client) to `counter`.
pub async fn start(upstream: SocketAddr, counter: Arc<AtomicU64>) -> Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                // Both legs without Nagle, as the clients themselves run.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                counter.fetch_add(n as u64, Ordering::Relaxed);
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    Ok(Proxy { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_downstream_bytes_only() -> Result<()> {
        let server = TcpListener::bind("127.0.0.1:0").await?;
        let upstream = server.local_addr()?;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = server.accept().await {
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(b"0123456789").await;
                }
            }
        });
        let counter = Arc::new(AtomicU64::new(0));
        let p = start(upstream, counter.clone()).await?;
        let mut c = TcpStream::connect(p.addr).await?;
        c.write_all(b"hello").await?;
        let mut got = Vec::new();
        c.read_to_end(&mut got).await?;
        assert_eq!(got, b"0123456789");
        assert_eq!(counter.load(Ordering::Relaxed), 10);
        Ok(())
    }
}
