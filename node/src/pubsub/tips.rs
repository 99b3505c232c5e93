//! Reading a rendezvous member's stream tips and durable records for replica sync: one `Tips`
//! request per answer, each answer filled up to a byte budget by the member, until it says
//! there is no more.

use std::time::Duration;

use libp2p::PeerId;
use serde_bytes::ByteBuf;

use crate::net::Network;
use crate::net::history::{HistoryRequest, HistoryResponse, Tip};

/// Answers read at most for one root and member (16k tips each): a member whose cursor does
/// not move on is not followed forever.
const MAX_ANSWERS: usize = 1024;

/// Every stream tip and durable record (key, DAG-CBOR) of `root` that `member` holds, each
/// answer within `timeout`; `Err` says why not (logged by the caller).
pub(crate) async fn ask_tips(
    net: &Network,
    member: PeerId,
    root: &str,
    timeout: Duration,
) -> Result<(Vec<Tip>, Vec<(String, ByteBuf)>), String> {
    let (mut streams, mut durables) = (Vec::new(), Vec::new());
    let mut from = None;
    for _ in 0..MAX_ANSWERS {
        let ask = HistoryRequest::Tips {
            root: root.to_string(),
            from: from.clone(),
        };
        match tokio::time::timeout(timeout, net.history(member, ask)).await {
            Ok(Ok(HistoryResponse::Tips {
                streams: s,
                durables: d,
                next,
            })) => {
                streams.extend(s);
                durables.extend(d);
                match next {
                    Some(n) if Some(&n) != from.as_ref() => from = Some(n),
                    _ => return Ok((streams, durables)),
                }
            }
            Ok(Ok(other)) => return Err(format!("unexpected answer {other:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        }
    }
    // What came is still worth syncing; the rest waits for the next round.
    Ok((streams, durables))
}
