//! The one error type of this crate.

/// Everything that can go wrong building, encoding, decoding or verifying tidings blocks.
///
/// Every variant carries a message fit to show a user; none of them is a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block (or an event's encoding) is over the size limit.
    #[error(
        "block too large: {size} bytes, the limit is {max} bytes (link large content by CID inside `body`)"
    )]
    TooLarge {
        /// Size of the offending block in bytes.
        size: usize,
        /// The limit in bytes ([`crate::MAX_BLOCK_SIZE`]).
        max: usize,
    },
    /// The bytes are not valid DAG-CBOR, or not shaped like an event.
    #[error("cannot decode block: {0}")]
    Decode(String),
    /// The bytes decode, but are not the canonical DAG-CBOR encoding of what they decode to.
    #[error("block is not canonical DAG-CBOR: {0}")]
    NonCanonical(String),
    /// A value cannot be encoded as DAG-CBOR (e.g. a NaN or infinite float).
    #[error("cannot encode as DAG-CBOR: {0}")]
    Encode(String),
    /// The body nests maps/lists deeper than [`crate::MAX_BODY_DEPTH`].
    #[error("body nested too deeply: more than {max} levels of maps/lists")]
    TooDeep {
        /// The nesting limit.
        max: usize,
    },
    /// The block's hash does not match the hash inside its CID.
    #[error("block hash does not match its CID")]
    BadHash,
    /// The CID uses a multihash this crate does not check (only sha2-256 is supported).
    #[error("unsupported multihash code 0x{code:x} in CID (only sha2-256, 0x12, is supported)")]
    UnsupportedHash {
        /// The multihash code found in the CID.
        code: u64,
    },
    /// The CID's codec is not the one expected (events are dag-cbor, 0x71).
    #[error("unexpected CID codec 0x{found:x}, expected 0x{expected:x}")]
    BadCodec {
        /// The codec found in the CID.
        found: u64,
        /// The codec that was required.
        expected: u64,
    },
    /// A CID string or byte sequence could not be parsed.
    #[error("bad CID: {0}")]
    BadCid(String),
    /// The event's format version is not one this crate understands.
    #[error("unsupported event version {0} (this implementation reads version 1)")]
    BadVersion(u64),
    /// The `author` field is not a valid libp2p-protobuf ed25519 public key.
    #[error("bad author key: {0}")]
    BadAuthor(String),
    /// The signature does not verify for the event's author.
    #[error("signature does not verify for the event's author")]
    BadSignature,
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Signing(String),
    /// The topic is not well-formed (docs/filters.md).
    #[error("bad topic: {0}")]
    BadTopic(String),
    /// `seq` is not valid (it starts at 1).
    #[error("bad seq: an event's seq starts at 1")]
    BadSeq,
    /// Two events that should be linked in a stream are not.
    #[error("bad stream link: {0}")]
    Link(String),
    /// A CAR file is malformed.
    #[error("bad CAR: {0}")]
    Car(String),
    /// JSON cannot be converted to the IPLD data model.
    #[error("bad JSON: {0}")]
    Json(String),
    /// Writing a CAR file to its sink failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
