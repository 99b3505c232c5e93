//! The bytes of tidings' request-response messages, decoded and encoded exactly as the swarm
//! does it, without a swarm: the fuzz targets (`fuzz/fuzz_targets/protocol_decode.rs`) and tests
//! feed hostile bytes through the very codec a remote peer's stream goes through. (The fetch
//! protocol is a plain stream with its own framing: [`super::fetch`] decodes it.)

use std::io;

use futures::executor::block_on;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{Codec, Received};
use super::deliver::{self, DeliverRequest, DeliverResponse};
use super::history::{self, HistoryRequest, HistoryResponse};
use super::publish::{self, PublishRequest, PublishResponse};
use super::replicate::{self, ReplicateRequest, ReplicateResponse};
use super::subscribe::{self, SubscribeRequest, SubscribeResponse};

/// One message of one protocol: which protocol, and request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/tidings/publish/2` request.
    PublishRequest,
    /// `/tidings/publish/2` response.
    PublishResponse,
    /// `/tidings/replicate/1` request.
    ReplicateRequest,
    /// `/tidings/replicate/1` response.
    ReplicateResponse,
    /// `/tidings/subscribe/1` request.
    SubscribeRequest,
    /// `/tidings/subscribe/1` response.
    SubscribeResponse,
    /// `/tidings/deliver/1` request.
    DeliverRequest,
    /// `/tidings/deliver/1` response.
    DeliverResponse,
    /// `/tidings/history/1` request.
    HistoryRequest,
    /// `/tidings/history/1` response.
    HistoryResponse,
}

impl Kind {
    /// Every kind, in a fixed order (a fuzz input's first byte picks one by index).
    pub const ALL: [Kind; 10] = [
        Kind::PublishRequest,
        Kind::PublishResponse,
        Kind::ReplicateRequest,
        Kind::ReplicateResponse,
        Kind::SubscribeRequest,
        Kind::SubscribeResponse,
        Kind::DeliverRequest,
        Kind::DeliverResponse,
        Kind::HistoryRequest,
        Kind::HistoryResponse,
    ];

    /// The protocol name this message travels on.
    pub fn protocol(self) -> &'static str {
        match self {
            Kind::PublishRequest | Kind::PublishResponse => publish::PROTOCOL,
            Kind::ReplicateRequest | Kind::ReplicateResponse => replicate::PROTOCOL,
            Kind::SubscribeRequest | Kind::SubscribeResponse => subscribe::PROTOCOL,
            Kind::DeliverRequest | Kind::DeliverResponse => deliver::PROTOCOL,
            Kind::HistoryRequest | Kind::HistoryResponse => history::PROTOCOL,
        }
    }
}

/// A decoded message of any kind.
#[derive(Debug, Clone)]
pub enum Message {
    /// See [`PublishRequest`].
    PublishRequest(PublishRequest),
    /// See [`PublishResponse`].
    PublishResponse(PublishResponse),
    /// See [`ReplicateRequest`].
    ReplicateRequest(ReplicateRequest),
    /// See [`ReplicateResponse`].
    ReplicateResponse(ReplicateResponse),
    /// See [`SubscribeRequest`].
    SubscribeRequest(SubscribeRequest),
    /// See [`SubscribeResponse`].
    SubscribeResponse(SubscribeResponse),
    /// See [`DeliverRequest`].
    DeliverRequest(DeliverRequest),
    /// See [`DeliverResponse`].
    DeliverResponse(DeliverResponse),
    /// See [`HistoryRequest`].
    HistoryRequest(HistoryRequest),
    /// See [`HistoryResponse`].
    HistoryResponse(HistoryResponse),
}

impl Message {
    /// Which kind of message this is.
    pub fn kind(&self) -> Kind {
        match self {
            Message::PublishRequest(_) => Kind::PublishRequest,
            Message::PublishResponse(_) => Kind::PublishResponse,
            Message::ReplicateRequest(_) => Kind::ReplicateRequest,
            Message::ReplicateResponse(_) => Kind::ReplicateResponse,
            Message::SubscribeRequest(_) => Kind::SubscribeRequest,
            Message::SubscribeResponse(_) => Kind::SubscribeResponse,
            Message::DeliverRequest(_) => Kind::DeliverRequest,
            Message::DeliverResponse(_) => Kind::DeliverResponse,
            Message::HistoryRequest(_) => Kind::HistoryRequest,
            Message::HistoryResponse(_) => Kind::HistoryResponse,
        }
    }
}

/// The codec the behaviour uses for every tidings protocol, with the same size limits.
fn codec<Req, Resp>() -> Codec<Req, Resp> {
    Codec::default()
}

fn read_request<Req, Resp>(kind: Kind, bytes: &[u8]) -> io::Result<Req>
where
    Req: Send + Serialize + DeserializeOwned,
    Resp: Send + Serialize + DeserializeOwned,
{
    let mut io = futures::io::Cursor::new(bytes);
    let protocol = StreamProtocol::new(kind.protocol());
    match block_on(codec::<Req, Resp>().read_request(&protocol, &mut io))? {
        Received::Ok(req) => Ok(req),
        // What the swarm refuses (and penalises) as a request, an error here.
        Received::Malformed(m) => Err(io::Error::new(io::ErrorKind::InvalidData, m)),
    }
}

fn read_response<Req, Resp>(kind: Kind, bytes: &[u8]) -> io::Result<Resp>
where
    Req: Send + Serialize + DeserializeOwned,
    Resp: Send + Serialize + DeserializeOwned,
{
    let mut io = futures::io::Cursor::new(bytes);
    let protocol = StreamProtocol::new(kind.protocol());
    block_on(codec::<Req, Resp>().read_response(&protocol, &mut io))
}

/// Decodes `bytes` as a message of `kind`, as the swarm decodes what arrives on a stream of
/// that protocol (same codec, same size limit: bytes past it are not read, and make it an
/// error). An error is what the swarm would report as a failed inbound request (see
/// [`super::codec::malformed`] for why); it never panics.
pub fn decode(kind: Kind, bytes: &[u8]) -> io::Result<Message> {
    use Message as M;
    Ok(match kind {
        Kind::PublishRequest => M::PublishRequest(read_request::<_, PublishResponse>(kind, bytes)?),
        Kind::PublishResponse => {
            M::PublishResponse(read_response::<PublishRequest, _>(kind, bytes)?)
        }
        Kind::ReplicateRequest => {
            M::ReplicateRequest(read_request::<_, ReplicateResponse>(kind, bytes)?)
        }
        Kind::ReplicateResponse => {
            M::ReplicateResponse(read_response::<ReplicateRequest, _>(kind, bytes)?)
        }
        Kind::SubscribeRequest => {
            M::SubscribeRequest(read_request::<_, SubscribeResponse>(kind, bytes)?)
        }
        Kind::SubscribeResponse => {
            M::SubscribeResponse(read_response::<SubscribeRequest, _>(kind, bytes)?)
        }
        Kind::DeliverRequest => M::DeliverRequest(read_request::<_, DeliverResponse>(kind, bytes)?),
        Kind::DeliverResponse => {
            M::DeliverResponse(read_response::<DeliverRequest, _>(kind, bytes)?)
        }
        Kind::HistoryRequest => M::HistoryRequest(read_request::<_, HistoryResponse>(kind, bytes)?),
        Kind::HistoryResponse => {
            M::HistoryResponse(read_response::<HistoryRequest, _>(kind, bytes)?)
        }
    })
}

fn write_request<Req, Resp>(kind: Kind, req: Req) -> io::Result<Vec<u8>>
where
    Req: Send + Serialize + DeserializeOwned,
    Resp: Send + Serialize + DeserializeOwned,
{
    let mut io = futures::io::Cursor::new(Vec::new());
    let protocol = StreamProtocol::new(kind.protocol());
    block_on(codec::<Req, Resp>().write_request(&protocol, &mut io, Received::Ok(req)))?;
    Ok(io.into_inner())
}

fn write_response<Req, Resp>(kind: Kind, resp: Resp) -> io::Result<Vec<u8>>
where
    Req: Send + Serialize + DeserializeOwned,
    Resp: Send + Serialize + DeserializeOwned,
{
    let mut io = futures::io::Cursor::new(Vec::new());
    let protocol = StreamProtocol::new(kind.protocol());
    block_on(codec::<Req, Resp>().write_response(&protocol, &mut io, resp))?;
    Ok(io.into_inner())
}

/// Encodes a message as the swarm writes it on a stream (the inverse of [`decode`]).
pub fn encode(msg: Message) -> io::Result<Vec<u8>> {
    let kind = msg.kind();
    match msg {
        Message::PublishRequest(m) => write_request::<_, PublishResponse>(kind, m),
        Message::PublishResponse(m) => write_response::<PublishRequest, _>(kind, m),
        Message::ReplicateRequest(m) => write_request::<_, ReplicateResponse>(kind, m),
        Message::ReplicateResponse(m) => write_response::<ReplicateRequest, _>(kind, m),
        Message::SubscribeRequest(m) => write_request::<_, SubscribeResponse>(kind, m),
        Message::SubscribeResponse(m) => write_response::<SubscribeRequest, _>(kind, m),
        Message::DeliverRequest(m) => write_request::<_, DeliverResponse>(kind, m),
        Message::DeliverResponse(m) => write_response::<DeliverRequest, _>(kind, m),
        Message::HistoryRequest(m) => write_request::<_, HistoryResponse>(kind, m),
        Message::HistoryResponse(m) => write_response::<HistoryRequest, _>(kind, m),
    }
}

#[cfg(test)]
mod tests {
    use super::publish::PublishAnswer;
    use super::*;
    use serde_bytes::ByteBuf;

    fn samples() -> Vec<Message> {
        let b = |s: &[u8]| ByteBuf::from(s.to_vec());
        vec![
            Message::PublishRequest(PublishRequest {
                blocks: vec![(b(b"cid"), b(b"block"))],
            }),
            Message::PublishResponse(PublishResponse::Each(vec![PublishAnswer::Stored {
                copies: 2,
                heads: vec![b(b"h")],
            }])),
            Message::PublishResponse(PublishResponse::Refused {
                status: 503,
                message: "no majority".into(),
            }),
            Message::ReplicateRequest(ReplicateRequest {
                blocks: vec![(b(b"c"), b(b"d"))],
            }),
            Message::ReplicateResponse(ReplicateResponse::Stored),
            Message::ReplicateResponse(ReplicateResponse::Refused("bad".into())),
            Message::SubscribeRequest(SubscribeRequest::Lease {
                id: 7,
                filter: "/a/**".into(),
                lease_secs: 30,
            }),
            Message::SubscribeRequest(SubscribeRequest::Cancel { id: 7 }),
            Message::SubscribeResponse(SubscribeResponse::Ok),
            Message::DeliverRequest(DeliverRequest {
                events: vec![(b(b"c"), b(b"d"))],
                after: vec![3],
            }),
            Message::DeliverResponse(DeliverResponse::Refused("no".into())),
            Message::HistoryRequest(HistoryRequest::DurableDelete { name: "d".into() }),
            Message::HistoryResponse(HistoryResponse::NotFound),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for msg in samples() {
            let kind = msg.kind();
            let bytes = encode(msg.clone()).expect("encode");
            let back = decode(kind, &bytes).expect("decode");
            assert_eq!(back.kind(), kind);
            assert_eq!(encode(back).expect("re-encode"), bytes, "{msg:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_for_every_kind() {
        for kind in Kind::ALL {
            for bytes in [
                &b""[..],
                b"\xff",
                b"\x9f\x9f\x9f",
                b"\xa1\x61x\x00",
                b"\x1b",
            ] {
                assert!(decode(kind, bytes).is_err(), "{kind:?} {bytes:?}");
            }
        }
    }

    #[test]
    fn a_request_is_not_mistaken_for_another_protocol() {
        let bytes = encode(Message::SubscribeRequest(SubscribeRequest::Cancel {
            id: 1,
        }))
        .expect("encode");
        assert!(decode(Kind::PublishRequest, &bytes).is_err());
        assert!(decode(Kind::ReplicateRequest, &bytes).is_err());
    }
}
