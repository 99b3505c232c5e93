//! How `GET /v1/subscribe` frames events over a WebSocket: `encoding=json` (the default) sends
//! each event's JSON as a text frame; `encoding=dag-cbor` sends each as one binary frame holding
//! the event's CID (binary form) followed by its DAG-CBOR block, i.e. a CAR v1 section without
//! its length prefix. With the block in hand a client checks the CID and the author's signature
//! itself, so it need not trust the node that serves it (the Python binding does so for every
//! event). Server-Sent Events carry text only, so `dag-cbor` there is a 400.

use axum::extract::ws::Message;
use tidings_ipld_schema::Cid;

use super::ApiError;
use crate::pubsub::Router;
use crate::pubsub::history::Backlogged;

/// The frame format of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// One text frame of event JSON per event (the default).
    Json,
    /// One binary frame per event: CID bytes, then the block.
    DagCbor,
}

impl Encoding {
    /// Reads the `encoding` query parameter; absent is JSON.
    pub(super) fn parse(value: Option<&str>) -> Result<Encoding, ApiError> {
        match value {
            None | Some("json") => Ok(Encoding::Json),
            Some("dag-cbor") => Ok(Encoding::DagCbor),
            Some(other) => Err(ApiError::bad_request(format!(
                "bad encoding {other:?}: json (text frames, the default) or dag-cbor (binary frames: CID then block; WebSocket only)"
            ))),
        }
    }

    /// The WebSocket message carrying `event`. An error (a block this node no longer holds)
    /// ends the subscription with that reason rather than skip the event unnoticed.
    pub(super) async fn message(
        self,
        router: &Router,
        event: &Backlogged,
    ) -> Result<Message, String> {
        match self {
            Encoding::Json => Ok(Message::Text(event.json.as_ref().into())),
            Encoding::DagCbor => frame(router, event)
                .await
                .map(|f| Message::Binary(f.into())),
        }
    }
}

/// CID bytes then block. History read from other members carries its block; live events were
/// stored here before they were delivered, so they are read from the store.
async fn frame(router: &Router, event: &Backlogged) -> Result<Vec<u8>, String> {
    let cid: Cid = event
        .cid
        .parse()
        .map_err(|e| format!("event {} has a bad CID: {e}", event.cid))?;
    let block: Vec<u8> = match &event.block {
        Some(b) => b.to_vec(),
        None => {
            let store = router.store().clone();
            tokio::task::spawn_blocking(move || store.get_block(&cid))
                .await
                .map_err(|e| format!("reading event {cid} failed: {e}"))?
                .map_err(|e| format!("reading event {cid} failed: {e}"))?
                .ok_or_else(|| format!("event {cid} is no longer held on this node"))?
        }
    };
    let mut out = cid.to_bytes();
    out.extend_from_slice(&block);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Encoding;

    #[test]
    fn encoding_names() {
        assert_eq!(Encoding::parse(None).ok(), Some(Encoding::Json));
        assert_eq!(Encoding::parse(Some("json")).ok(), Some(Encoding::Json));
        assert_eq!(
            Encoding::parse(Some("dag-cbor")).ok(),
            Some(Encoding::DagCbor)
        );
        let err = Encoding::parse(Some("cbor")).err().map(|e| e.message);
        assert!(err.is_some_and(|m| m.contains("dag-cbor")));
    }
}
