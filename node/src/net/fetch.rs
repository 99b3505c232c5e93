//! `/tidings/fetch/1`: one request, a stream of blocks (docs/protocols.md).
//!
//! The requester opens a stream and writes one [`FetchRequest`]; the responder walks the DAG from
//! `want` through `prev` (and links in `body`), breadth-first so each chain comes newest first,
//! stopping at `have`, and writes one frame per block, then one [`FetchEnd`] frame. No round trip
//! per block: this is what makes backfill fast.
//!
//! Frames are `u32` big-endian length, then a tag byte and the payload:
//! * [`TAG_BLOCK`]: `u8` CID length, CID bytes, block bytes;
//! * [`TAG_END`]: a DAG-CBOR [`FetchEnd`].
//!
//! This module is the wire format only; the walk is the store's and verification the fetcher's.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tidings_ipld_schema::{Cid, MAX_BLOCK_SIZE};

use super::batch::Budget;

/// Protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/tidings/fetch/1");

/// Frame tag of a block.
pub const TAG_BLOCK: u8 = 1;
/// Frame tag of the final frame.
pub const TAG_END: u8 = 2;

/// Largest request accepted (a `have` list of some thousands of CIDs).
pub const MAX_REQUEST: usize = 1 << 20;
/// Largest frame accepted: a block of the maximum size, its CID and the framing.
pub const MAX_FRAME: usize = MAX_BLOCK_SIZE + 256;
/// Most CIDs listed in `want` or `have`.
pub const MAX_LISTED: usize = 16 * 1024;
/// What a requester puts in each of `want` and `have`: at most [`MAX_LISTED`] CIDs, and half
/// of [`MAX_REQUEST`] less room for the rest (16k CIDs of each would be over it).
pub const LIST_BUDGET: Budget = Budget {
    bytes: (MAX_REQUEST - 4096) / 2,
    count: MAX_LISTED,
};

/// Estimated encoded size of one listed CID (its bytes and a byte-string header).
pub fn listed_size(cid: &[u8]) -> usize {
    cid.len() + 9
}

/// Payload length of the frame of a block with CID bytes `cid` (what the receiver checks
/// against [`MAX_FRAME`]).
pub fn block_frame_len(cid: &[u8], data: &[u8]) -> usize {
    1 + 1 + cid.len() + data.len()
}

/// What the requester wants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetchRequest {
    /// CIDs to start from (they are sent too).
    pub want: Vec<ByteBuf>,
    /// CIDs the requester holds: the walk neither sends them nor goes past them.
    pub have: Vec<ByteBuf>,
    /// Stop after this many blocks (0: the responder's limit).
    pub max_blocks: u64,
    /// Stop after this many bytes of blocks (0: the responder's limit).
    pub max_bytes: u64,
}

/// The responder's last frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FetchEnd {
    /// Blocks sent.
    pub blocks: u64,
    /// Set when a limit stopped the walk: where to continue (CIDs reached but not sent).
    pub more: Vec<ByteBuf>,
    /// CIDs the walk reached that the responder does not hold.
    pub missing: Vec<ByteBuf>,
    /// Set when the responder refused or failed (busy, bad request, store error).
    pub error: Option<String>,
}

/// A frame read off a fetch stream.
#[derive(Debug)]
pub enum Frame {
    /// One block.
    Block(Cid, Vec<u8>),
    /// The end of the answer.
    End(FetchEnd),
}

/// Errors on a fetch stream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or closed early.
    #[error("fetch stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not this protocol.
    #[error("malformed fetch message: {0}")]
    Malformed(String),
}

fn malformed(m: impl Into<String>) -> WireError {
    WireError::Malformed(m.into())
}

/// Encodes a request as a length-prefixed DAG-CBOR message.
pub fn encode_request(req: &FetchRequest) -> Result<Vec<u8>, WireError> {
    let body = serde_ipld_dagcbor::to_vec(req).map_err(|e| malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a request's payload (without the length prefix), checking its limits.
pub fn decode_request(bytes: &[u8]) -> Result<FetchRequest, WireError> {
    let req: FetchRequest =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if req.want.len() > MAX_LISTED || req.have.len() > MAX_LISTED {
        return Err(malformed(format!(
            "want/have list more than {MAX_LISTED} CIDs"
        )));
    }
    Ok(req)
}

/// Reads one length-prefixed request.
pub async fn read_request<R: futures::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<FetchRequest, WireError> {
    let len = read_len(r).await?;
    if len > MAX_REQUEST {
        return Err(malformed(format!(
            "request of {len} bytes, limit {MAX_REQUEST}"
        )));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    decode_request(&buf)
}

/// Appends a block frame to `out`.
pub fn push_block(out: &mut Vec<u8>, cid: &[u8], data: &[u8]) {
    let len = block_frame_len(cid, data);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(TAG_BLOCK);
    out.push(cid.len() as u8);
    out.extend_from_slice(cid);
    out.extend_from_slice(data);
}

/// Encodes the end frame.
pub fn end_frame(end: &FetchEnd) -> Vec<u8> {
    // A struct of byte strings and counts always encodes.
    let body = serde_ipld_dagcbor::to_vec(end).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(TAG_END);
    out.extend_from_slice(&body);
    out
}

/// Decodes one frame's payload (tag and body, without the length prefix).
pub fn decode_frame(payload: &[u8]) -> Result<Frame, WireError> {
    match payload.split_first() {
        Some((&TAG_BLOCK, rest)) => {
            let (&cid_len, rest) = rest
                .split_first()
                .ok_or_else(|| malformed("empty block frame"))?;
            let cid_len = cid_len as usize;
            if rest.len() < cid_len {
                return Err(malformed("block frame shorter than its CID"));
            }
            let (cid, data) = rest.split_at(cid_len);
            let cid = Cid::try_from(cid).map_err(|e| malformed(format!("bad CID: {e}")))?;
            Ok(Frame::Block(cid, data.to_vec()))
        }
        Some((&TAG_END, rest)) => serde_ipld_dagcbor::from_slice(rest)
            .map(Frame::End)
            .map_err(|e| malformed(format!("bad end frame: {e}"))),
        Some((tag, _)) => Err(malformed(format!("unknown frame tag {tag}"))),
        None => Err(malformed("empty frame")),
    }
}

/// Reads the next frame.
pub async fn read_frame<R: futures::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Frame, WireError> {
    let len = read_len(r).await?;
    if len > MAX_FRAME {
        return Err(malformed(format!(
            "frame of {len} bytes, limit {MAX_FRAME}"
        )));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    decode_frame(buf)
}

/// Writes bytes and flushes.
pub async fn write_all<W: futures::AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), WireError> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

async fn read_len<R: futures::AsyncRead + Unpin>(r: &mut R) -> Result<usize, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    Ok(u32::from_be_bytes(len) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let cid = tidings_ipld_schema::cid_of(tidings_ipld_schema::RAW, b"x");
        let mut out = Vec::new();
        push_block(&mut out, &cid.to_bytes(), b"x");
        match decode_frame(&out[4..]).expect("block") {
            Frame::Block(c, d) => assert_eq!((c, d.as_slice()), (cid, &b"x"[..])),
            other => panic!("{other:?}"),
        }
        let end = FetchEnd {
            blocks: 3,
            more: vec![ByteBuf::from(cid.to_bytes())],
            missing: vec![],
            error: Some("busy".into()),
        };
        match decode_frame(&end_frame(&end)[4..]).expect("end") {
            Frame::End(e) => assert_eq!(e, end),
            other => panic!("{other:?}"),
        }
        for bad in [
            &[][..],
            &[9, 1, 2],
            &[TAG_BLOCK],
            &[TAG_BLOCK, 40, 1],
            &[TAG_END, 0xff],
        ] {
            assert!(decode_frame(bad).is_err(), "{bad:?}");
        }
        let req = FetchRequest {
            want: vec![ByteBuf::from(cid.to_bytes())],
            have: vec![],
            max_blocks: 1,
            max_bytes: 0,
        };
        assert_eq!(
            decode_request(&encode_request(&req).expect("enc")[4..]).expect("dec"),
            req
        );
        assert!(decode_request(b"\xa0garbage").is_err());
    }
}
