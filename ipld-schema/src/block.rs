//! Blocks: bytes plus the CID that addresses them; canonical DAG-CBOR encode/decode.

use crate::{Cid, DAG_CBOR, Error, Ipld, MAX_BLOCK_SIZE, MAX_BODY_DEPTH};
use multihash_codetable::{Code, MultihashDigest};

/// Multihash code of sha2-256, the only hash this crate produces or checks.
pub const SHA2_256: u64 = 0x12;

/// A block: its CID and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The CID addressing `data`.
    pub cid: Cid,
    /// The block's bytes.
    pub data: Vec<u8>,
}

impl Block {
    /// Wraps DAG-CBOR bytes as a block, computing its CIDv1 (dag-cbor, sha2-256).
    ///
    /// Fails with [`Error::TooLarge`] over [`MAX_BLOCK_SIZE`]. The bytes are not decoded.
    pub fn new_dag_cbor(data: Vec<u8>) -> Result<Block, Error> {
        check_size(data.len())?;
        Ok(Block {
            cid: cid_of(DAG_CBOR, &data),
            data,
        })
    }

    /// Checks that `data` is what `cid` addresses: size within [`MAX_BLOCK_SIZE`], the CID's
    /// multihash is sha2-256 (other codes give [`Error::UnsupportedHash`]) and the digest matches
    /// (else [`Error::BadHash`]). Any codec is accepted; the bytes are not decoded.
    pub fn check(cid: &Cid, data: &[u8]) -> Result<(), Error> {
        check_size(data.len())?;
        let hash = cid.hash();
        if hash.code() != SHA2_256 {
            return Err(Error::UnsupportedHash { code: hash.code() });
        }
        if hash.size() != 32 {
            return Err(Error::BadCid(format!(
                "sha2-256 digest of {} bytes, expected 32",
                hash.size()
            )));
        }
        if Code::Sha2_256.digest(data).digest() != hash.digest() {
            return Err(Error::BadHash);
        }
        Ok(())
    }

    /// Checks this block's own bytes against its CID (see [`Block::check`]).
    pub fn verify_hash(&self) -> Result<(), Error> {
        Block::check(&self.cid, &self.data)
    }
}

/// The CIDv1 of `data` under `codec` ([`DAG_CBOR`], [`crate::RAW`], ...), hashed with sha2-256.
pub fn cid_of(codec: u64, data: &[u8]) -> Cid {
    Cid::new_v1(codec, Code::Sha2_256.digest(data))
}

/// Parses a CID from its string form (any multibase; CIDv0 `Qm...` too), with a clear error.
pub fn parse_cid(s: &str) -> Result<Cid, Error> {
    Cid::try_from(s).map_err(|e| Error::BadCid(format!("{s:?}: {e}")))
}

pub(crate) fn check_size(size: usize) -> Result<(), Error> {
    if size > MAX_BLOCK_SIZE {
        Err(Error::TooLarge {
            size,
            max: MAX_BLOCK_SIZE,
        })
    } else {
        Ok(())
    }
}

/// Nesting depth of maps and lists: a scalar is 0, `[1]` is 1, `{"a": [1]}` is 2.
///
/// Iterative, so it never overflows the stack however deep `v` is.
pub fn depth(v: &Ipld) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Ipld::List(items) => {
                max = max.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Ipld::Map(map) => {
                max = max.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    max
}

pub(crate) fn check_depth(v: &Ipld) -> Result<(), Error> {
    if depth(v) > MAX_BODY_DEPTH {
        Err(Error::TooDeep {
            max: MAX_BODY_DEPTH,
        })
    } else {
        Ok(())
    }
}

/// Encodes any IPLD value as canonical DAG-CBOR (map keys length-first then bytewise, minimal
/// integers, 64-bit floats, CIDs as tag 42).
///
/// Fails for NaN/infinite floats, for nesting deeper than [`MAX_BODY_DEPTH`] + 1 (so that what
/// is encoded can be decoded) and over [`MAX_BLOCK_SIZE`].
pub fn encode_dag_cbor(v: &Ipld) -> Result<Vec<u8>, Error> {
    if depth(v) > MAX_BODY_DEPTH + 1 {
        return Err(Error::TooDeep {
            max: MAX_BODY_DEPTH,
        });
    }
    let bytes = serde_ipld_dagcbor::to_vec(v).map_err(|e| Error::Encode(e.to_string()))?;
    check_size(bytes.len())?;
    Ok(bytes)
}

/// Decodes DAG-CBOR strictly: the bytes must be at most [`MAX_BLOCK_SIZE`], decode as one
/// DAG-CBOR value with nothing after it, and be exactly the canonical encoding of that value
/// (so re-encoding anything accepted here is byte-identical).
///
/// Bytes the allocation-free reader ([`crate::canonical`]) finds canonical are decoded once;
/// the rest go through [`decode_dag_cbor_reference`], which gives the answer and the error.
pub fn decode_dag_cbor(bytes: &[u8]) -> Result<Ipld, Error> {
    check_size(bytes.len())?;
    if crate::canonical::is_canonical(bytes)
        && let Ok(v) = serde_ipld_dagcbor::from_slice::<Ipld>(bytes)
    {
        return Ok(v);
    }
    decode_dag_cbor_reference(bytes)
}

/// [`decode_dag_cbor`] by its definition: decode, encode the value again and compare the bytes.
/// Slower; the tests and fuzz targets check the fast path against it.
pub fn decode_dag_cbor_reference(bytes: &[u8]) -> Result<Ipld, Error> {
    check_size(bytes.len())?;
    let v: Ipld =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    let again = serde_ipld_dagcbor::to_vec(&v).map_err(|e| Error::Decode(e.to_string()))?;
    if again != bytes {
        return Err(Error::NonCanonical(
            "re-encoding the decoded value gives different bytes (key order, integer or float width, or length encoding)".into(),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RAW;
    use std::collections::BTreeMap;

    #[test]
    fn cid_of_known_vector() {
        // sha2-256("hello") as a raw CIDv1, as printed by `ipfs add --raw-leaves --cid-version 1`.
        let cid = cid_of(RAW, b"hello");
        assert_eq!(
            cid.to_string(),
            "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
        );
        assert_eq!(cid.codec(), RAW);
        assert_eq!(cid.version(), cid::Version::V1);
    }

    #[test]
    fn block_check_accepts_and_rejects() {
        let b = Block::new_dag_cbor(vec![0xa0]).expect("small");
        Block::check(&b.cid, &b.data).expect("own hash");
        b.verify_hash().expect("own hash");
        assert!(matches!(Block::check(&b.cid, &[0xa1]), Err(Error::BadHash)));
        // A CID with another hash function is refused clearly, not treated as a mismatch.
        let other = Cid::new_v1(DAG_CBOR, Code::Sha2_512.digest(&b.data));
        let err = Block::check(&other, &b.data).expect_err("sha2-512");
        assert!(
            matches!(err, Error::UnsupportedHash { code: 0x13 }),
            "{err}"
        );
        assert!(err.to_string().contains("0x13"));
    }

    #[test]
    fn oversized_blocks_are_refused() {
        let data = vec![0u8; MAX_BLOCK_SIZE + 1];
        let err = Block::new_dag_cbor(data.clone()).expect_err("too large");
        assert!(
            matches!(err, Error::TooLarge { size, max } if size == MAX_BLOCK_SIZE + 1 && max == MAX_BLOCK_SIZE)
        );
        assert!(err.to_string().contains("1048577"));
        let cid = cid_of(RAW, &data);
        assert!(matches!(
            Block::check(&cid, &data),
            Err(Error::TooLarge { .. })
        ));
        Block::new_dag_cbor(vec![0u8; MAX_BLOCK_SIZE]).expect("exactly 1 MiB is allowed");
    }

    #[test]
    fn bad_cid_strings_are_refused() {
        for s in [
            "",
            "bafy",
            "not a cid",
            "Qm123",
            "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52z!",
        ] {
            assert!(matches!(parse_cid(s), Err(Error::BadCid(_))), "{s:?}");
        }
        let c = parse_cid("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
            .expect("valid");
        assert_eq!(c.codec(), DAG_CBOR);
    }

    #[test]
    fn encoding_sorts_keys_length_first() {
        let mut m = BTreeMap::new();
        for k in ["bb", "a", "c", "aaa"] {
            m.insert(k.to_string(), Ipld::Integer(1));
        }
        let bytes = encode_dag_cbor(&Ipld::Map(m)).expect("encode");
        // a, c, bb, aaa
        assert_eq!(
            bytes,
            [
                0xa4, 0x61, b'a', 1, 0x61, b'c', 1, 0x62, b'b', b'b', 1, 0x63, b'a', b'a', b'a', 1
            ]
        );
        decode_dag_cbor(&bytes).expect("canonical");
    }

    #[test]
    fn strict_decoding_rejects_non_canonical_forms() {
        let cases: &[(&str, &[u8])] = &[
            (
                "keys out of order",
                &[0xa2, 0x62, b'b', b'b', 1, 0x61, b'a', 1],
            ),
            ("non-minimal integer", &[0x18, 0x01]),
            ("32-bit float", &[0xfa, 0x3f, 0x80, 0x00, 0x00]),
            ("16-bit float", &[0xf9, 0x3c, 0x00]),
            ("indefinite list", &[0x9f, 0x01, 0xff]),
            ("trailing bytes", &[0x01, 0x01]),
            ("duplicate keys", &[0xa2, 0x61, b'a', 1, 0x61, b'a', 2]),
            ("undefined", &[0xf7]),
            ("NaN", &[0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]),
            ("truncated", &[0xa1, 0x61]),
            ("empty", &[]),
            ("unknown tag", &[0xc1, 0x01]),
            ("negative zero", &[0xfb, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            ("CID without 0x00 prefix", &[0xd8, 0x2a, 0x41, 0x01]),
        ];
        for (what, bytes) in cases {
            assert!(decode_dag_cbor(bytes).is_err(), "{what} was accepted");
        }
        assert_eq!(
            decode_dag_cbor(&[0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]).expect("f64"),
            Ipld::Float(1.0)
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_stack_overflow() {
        // 1 MiB of "array of one element" headers: must be an error, not a crash.
        let mut bytes = vec![0x81u8; MAX_BLOCK_SIZE - 1];
        bytes.push(0x01);
        assert!(decode_dag_cbor(&bytes).is_err());
        let mut v = Ipld::Integer(1);
        for _ in 0..100_000 {
            v = Ipld::List(vec![v]);
        }
        assert!(matches!(encode_dag_cbor(&v), Err(Error::TooDeep { .. })));
        assert_eq!(depth(&v), 100_000);
        // Dropping a deeply nested value recurses; leak it to keep the test about our code.
        std::mem::forget(v);
    }

    #[test]
    fn nan_cannot_be_encoded() {
        assert!(matches!(
            encode_dag_cbor(&Ipld::Float(f64::NAN)),
            Err(Error::Encode(_))
        ));
        assert!(matches!(
            encode_dag_cbor(&Ipld::Float(f64::INFINITY)),
            Err(Error::Encode(_))
        ));
    }
}
