//! The codec of tidings' request-response protocols: CBOR (libp2p's), with a size limit that
//! is an error of its own and decode errors marked as the sender's fault, so the swarm can tell
//! a peer that sends garbage or oversized messages (penalise it) from a stream that broke.
//!
//! A request that cannot be decoded is not an error of the stream but a [`Received::Malformed`]
//! request: request-response reports a failed read to nobody (not even as an inbound failure),
//! while a request reaches the swarm with its sender, who can then be answered and penalised.

use std::io;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response::{self, cbor};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest request or response on the tidings protocols. Senders fill their messages to a
/// quarter of it ([`MESSAGE_BUDGET`](super::batch::MESSAGE_BUDGET)); a receiver refuses
/// anything over it as hostile.
pub const MAX_MESSAGE: u64 = 16 << 20;

/// Why a received message was rejected: the sender's fault (except [`Malformed::Truncated`],
/// which a stream reset mid-message also produces). Carried inside the [`io::Error`] the codec
/// returns; see [`malformed`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum Malformed {
    /// More bytes than [`MAX_MESSAGE`].
    #[error("message over the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The bytes end inside a CBOR value.
    #[error("truncated message: {0}")]
    Truncated(String),
    /// Not CBOR, or not the shape of this protocol's message.
    #[error("undecodable message: {0}")]
    Invalid(String),
}

/// A request as read off a stream: decoded, or why it could not be.
#[derive(Debug, Clone)]
pub enum Received<T> {
    /// A well-formed request.
    Ok(T),
    /// Bytes that are not a request of this protocol, or too many of them.
    Malformed(Malformed),
}

/// The [`Malformed`] inside a codec error, if that is what it is.
pub fn malformed(e: &io::Error) -> Option<&Malformed> {
    e.get_ref()?.downcast_ref::<Malformed>()
}

/// CBOR request-response codec with [`MAX_MESSAGE`] as the limit both ways. Requests are
/// [`Received`]: sending one is `Received::Ok(request)`.
pub struct Codec<Req, Resp> {
    inner: cbor::codec::Codec<Req, Resp>,
}

impl<Req, Resp> Default for Codec<Req, Resp> {
    fn default() -> Self {
        Codec {
            inner: cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_MESSAGE)
                .set_response_size_maximum(MAX_MESSAGE),
        }
    }
}

impl<Req, Resp> Clone for Codec<Req, Resp> {
    fn clone(&self) -> Self {
        Codec {
            inner: self.inner.clone(),
        }
    }
}

/// Reads the whole message, or fails with [`Malformed::TooLarge`] past [`MAX_MESSAGE`] without
/// reading further.
async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io.take(MAX_MESSAGE + 1).read_to_end(&mut bytes).await?;
    if bytes.len() as u64 > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            Malformed::TooLarge { limit: MAX_MESSAGE },
        ));
    }
    Ok(bytes)
}

/// Marks a decode error of libp2p's CBOR codec as [`Malformed`].
fn mark(e: io::Error) -> io::Error {
    let m = if e.kind() == io::ErrorKind::UnexpectedEof {
        Malformed::Truncated(e.to_string())
    } else {
        Malformed::Invalid(e.to_string())
    };
    io::Error::new(io::ErrorKind::InvalidData, m)
}

impl<Req, Resp> request_response::Codec for Codec<Req, Resp>
where
    Req: Send + Serialize + DeserializeOwned,
    Resp: Send + Serialize + DeserializeOwned,
{
    type Protocol = StreamProtocol;
    type Request = Received<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Received<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        // Only a broken stream is an error here; bad bytes are a request the swarm refuses.
        let bytes = match read_limited(io).await {
            Ok(b) => b,
            Err(e) => {
                return match malformed(&e) {
                    Some(m) => Ok(Received::Malformed(m.clone())),
                    None => Err(e),
                };
            }
        };
        let mut cursor = futures::io::Cursor::new(bytes);
        match self.inner.read_request(p, &mut cursor).await.map_err(mark) {
            Ok(req) => Ok(Received::Ok(req)),
            Err(e) => match malformed(&e) {
                Some(m) => Ok(Received::Malformed(m.clone())),
                None => Err(e),
            },
        }
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_limited(io).await?;
        let mut cursor = futures::io::Cursor::new(bytes);
        self.inner.read_response(p, &mut cursor).await.map_err(mark)
    }

    async fn write_request<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        req: Received<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = match req {
            Received::Ok(req) => req,
            Received::Malformed(m) => return Err(io::Error::new(io::ErrorKind::InvalidInput, m)),
        };
        let mut buf = futures::io::Cursor::new(Vec::new());
        self.inner.write_request(p, &mut buf, req).await?;
        write_checked(p, io, buf.into_inner()).await
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut buf = futures::io::Cursor::new(Vec::new());
        self.inner.write_response(p, &mut buf, resp).await?;
        write_checked(p, io, buf.into_inner()).await
    }
}

/// Writes an encoded message unless it is over [`MAX_MESSAGE`]: its receiver would refuse it
/// and penalise this node, so it is a bug where it was built (see [`check_encoded`]).
async fn write_checked<T: AsyncWrite + Unpin + Send>(
    p: &StreamProtocol,
    io: &mut T,
    bytes: Vec<u8>,
) -> io::Result<()> {
    check_encoded(p.as_ref(), bytes.len(), MAX_MESSAGE as usize)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    io.write_all(&bytes).await
}

/// An encoded message over the limit its receiver enforces.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "refusing to send a {bytes}-byte {protocol} message: its receiver refuses any over {limit} bytes"
)]
pub struct TooLarge {
    /// The protocol.
    pub protocol: String,
    /// Its encoded size.
    pub bytes: usize,
    /// The receiver's limit.
    pub limit: usize,
}

/// Checks a message this node is about to send against `limit`, the receiver's limit. A
/// message over it is a bug in how it was built: debug builds stop on it; release builds log
/// it as an error and do not send it (its receiver would cut this node off).
pub fn check_encoded(protocol: &str, bytes: usize, limit: usize) -> Result<(), TooLarge> {
    if bytes <= limit {
        return Ok(());
    }
    let e = TooLarge {
        protocol: protocol.to_string(),
        bytes,
        limit,
    };
    tracing::error!(error = %e, "bug: a message was built over the limit peers enforce");
    debug_assert!(false, "{e}");
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use request_response::Codec as _;

    fn read(bytes: Vec<u8>) -> Received<Vec<u32>> {
        let mut io = futures::io::Cursor::new(bytes);
        block_on(Codec::<Vec<u32>, ()>::default().read_request(&StreamProtocol::new("/t"), &mut io))
            .expect("only a broken stream is an error")
    }

    fn bad(bytes: Vec<u8>) -> Malformed {
        match read(bytes) {
            Received::Malformed(m) => m,
            Received::Ok(v) => panic!("decoded {v:?}"),
        }
    }

    #[test]
    fn a_message_round_trips() {
        let mut io = futures::io::Cursor::new(Vec::new());
        let p = StreamProtocol::new("/t");
        let mut codec = Codec::<Vec<u32>, ()>::default();
        block_on(codec.write_request(&p, &mut io, Received::Ok(vec![1, 2]))).expect("write");
        assert!(matches!(read(io.into_inner()), Received::Ok(v) if v == [1, 2]));
    }

    #[test]
    fn garbage_truncation_and_size_are_told_apart() {
        assert!(matches!(bad(b"\xff\xff".to_vec()), Malformed::Invalid(_)));
        // An array of 3 with one element.
        assert!(matches!(bad(b"\x83\x01".to_vec()), Malformed::Truncated(_)));
        let m = bad(vec![0x80; MAX_MESSAGE as usize + 1]);
        assert!(matches!(m, Malformed::TooLarge { limit } if limit == MAX_MESSAGE));
        assert_eq!(m.to_string(), "message over the 16777216-byte limit");
        // A plain I/O error is not the sender's fault.
        assert!(malformed(&io::Error::other("reset")).is_none());
    }

    #[test]
    fn a_bad_response_is_an_error_that_says_why() {
        let mut io = futures::io::Cursor::new(b"\xff".to_vec());
        let p = StreamProtocol::new("/t");
        let e = block_on(Codec::<(), Vec<u32>>::default().read_response(&p, &mut io))
            .expect_err("garbage");
        assert!(matches!(malformed(&e), Some(Malformed::Invalid(_))), "{e}");
    }

    #[test]
    fn a_message_over_the_limit_is_refused_with_a_clear_error() {
        // Release builds refuse it; debug builds stop on it (it is a bug), which is what this
        // checks there.
        let r =
            std::panic::catch_unwind(|| check_encoded("/tidings/deliver/1", 17 << 20, 16 << 20));
        if cfg!(debug_assertions) {
            assert!(r.is_err(), "debug builds stop on it");
        } else {
            assert!(matches!(r, Ok(Err(TooLarge { bytes, .. })) if bytes == 17 << 20));
        }
        let e = TooLarge {
            protocol: "/tidings/deliver/1".into(),
            bytes: 17 << 20,
            limit: 16 << 20,
        };
        assert_eq!(
            e.to_string(),
            "refusing to send a 17825792-byte /tidings/deliver/1 message: its receiver refuses any over 16777216 bytes"
        );
        assert!(check_encoded("x", 16 << 20, 16 << 20).is_ok());
    }
}
