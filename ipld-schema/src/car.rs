//! CAR v1 (content-addressed archive) export and import, for IPFS tooling.
//!
//! Layout: `varint(len) header` then sections `varint(len) cid-bytes block-bytes`, where the
//! header is the DAG-CBOR map `{"roots": [links], "version": 1}` and varints are unsigned LEB128.

use crate::block::check_size;
use crate::{Block, Cid, Error, Ipld, MAX_BLOCK_SIZE};
use std::collections::BTreeMap;
use std::io::Write;

/// Largest header accepted by [`read_car`], in bytes.
pub const MAX_HEADER_SIZE: usize = MAX_BLOCK_SIZE;
/// Longest CID accepted inside a section (a CIDv1 with a 64-byte digest is < 80 bytes).
pub const MAX_CID_LEN: usize = 128;

/// CAR v1: header {roots, version: 1} as DAG-CBOR, then varint-length-prefixed (cid bytes ++ block) sections.
///
/// Every block is checked against its CID first ([`Block::check`]: sha2-256, at most 1 MiB), so
/// whatever this writes, [`read_car`] reads back.
pub fn write_car<W: std::io::Write>(
    mut w: W,
    roots: &[Cid],
    blocks: impl IntoIterator<Item = (Cid, Vec<u8>)>,
) -> Result<(), Error> {
    let mut header = BTreeMap::new();
    header.insert(
        "roots".to_owned(),
        Ipld::List(roots.iter().copied().map(Ipld::Link).collect()),
    );
    header.insert("version".to_owned(), Ipld::Integer(1));
    let header = serde_ipld_dagcbor::to_vec(&Ipld::Map(header))
        .map_err(|e| Error::Car(format!("cannot encode header: {e}")))?;
    write_varint(&mut w, header.len() as u64)?;
    w.write_all(&header)?;
    for (cid, data) in blocks {
        Block::check(&cid, &data).map_err(|e| Error::Car(format!("block {cid}: {e}")))?;
        let cid_bytes = cid.to_bytes();
        write_varint(&mut w, (cid_bytes.len() + data.len()) as u64)?;
        w.write_all(&cid_bytes)?;
        w.write_all(&data)?;
    }
    w.flush()?;
    Ok(())
}

/// A CAR file read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Car {
    /// The header's roots (for a tidings stream: its heads).
    pub roots: Vec<Cid>,
    /// Every section, in file order: CID and block bytes.
    pub blocks: Vec<(Cid, Vec<u8>)>,
}

/// Reads and checks every section's hash against its CID; bounds every length (no huge allocation from a hostile varint).
///
/// Only CAR v1 with sha2-256 CIDs is accepted; any error names the section at fault.
pub fn read_car(bytes: &[u8]) -> Result<Car, Error> {
    let mut rest = bytes;
    let header_len =
        read_varint(&mut rest).map_err(|e| Error::Car(format!("header length: {e}")))?;
    if header_len == 0 || header_len > MAX_HEADER_SIZE as u64 || header_len > rest.len() as u64 {
        return Err(Error::Car(format!(
            "header length {header_len} is impossible ({} bytes follow, limit {MAX_HEADER_SIZE})",
            rest.len()
        )));
    }
    let (header, after) = rest.split_at(header_len as usize);
    rest = after;
    let roots = parse_header(header)?;
    let mut blocks = Vec::new();
    let mut index = 0usize;
    while !rest.is_empty() {
        index += 1;
        let at = |e: String| Error::Car(format!("section {index}: {e}"));
        let len = read_varint(&mut rest).map_err(at)?;
        if len == 0 {
            return Err(at("empty section".into()));
        }
        if len > (MAX_BLOCK_SIZE + MAX_CID_LEN) as u64 {
            return Err(at(format!(
                "length {len} is over the {MAX_BLOCK_SIZE}-byte block limit"
            )));
        }
        if len > rest.len() as u64 {
            return Err(at(format!(
                "truncated: length {len} but only {} bytes left",
                rest.len()
            )));
        }
        let (mut section, after) = rest.split_at(len as usize);
        rest = after;
        let cid = Cid::read_bytes(&mut section).map_err(|e| at(format!("bad CID: {e}")))?;
        check_size(section.len()).map_err(|e| at(e.to_string()))?;
        Block::check(&cid, section).map_err(|e| at(format!("{cid}: {e}")))?;
        blocks.push((cid, section.to_vec()));
    }
    Ok(Car { roots, blocks })
}

fn parse_header(header: &[u8]) -> Result<Vec<Cid>, Error> {
    let bad = |e: String| Error::Car(format!("header: {e}"));
    let v: Ipld = serde_ipld_dagcbor::from_slice(header).map_err(|e| bad(e.to_string()))?;
    let Ipld::Map(m) = v else {
        return Err(bad("not a map".into()));
    };
    match m.get("version") {
        Some(Ipld::Integer(1)) => {}
        Some(Ipld::Integer(2)) => return Err(bad("CAR v2 is not supported, only v1".into())),
        Some(other) => return Err(bad(format!("unsupported version {other:?}"))),
        None => return Err(bad("no version".into())),
    }
    match m.get("roots") {
        Some(Ipld::List(items)) => items
            .iter()
            .map(|i| match i {
                Ipld::Link(c) => Ok(*c),
                _ => Err(bad("roots must be links".into())),
            })
            .collect(),
        _ => Err(bad("roots must be a list of links".into())),
    }
}

fn write_varint<W: Write>(w: &mut W, mut n: u64) -> Result<(), Error> {
    let mut buf = [0u8; 10];
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[i] = byte;
            i += 1;
            break;
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
    w.write_all(&buf[..i])?;
    Ok(())
}

/// Reads an unsigned LEB128 varint of at most 9 bytes (63 bits), as multiformats specifies.
fn read_varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut n: u64 = 0;
    for i in 0..9 {
        let Some((&byte, rest)) = input.split_first() else {
            return Err("truncated varint".into());
        };
        *input = rest;
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err("non-minimal varint".into());
            }
            return Ok(n);
        }
    }
    Err("varint longer than 9 bytes".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DAG_CBOR, RAW, cid_of};

    fn sample() -> (Vec<Cid>, Vec<(Cid, Vec<u8>)>) {
        let blocks: Vec<(Cid, Vec<u8>)> = vec![
            (cid_of(RAW, b"hello"), b"hello".to_vec()),
            (cid_of(DAG_CBOR, &[0xa0]), vec![0xa0]),
            (cid_of(RAW, &[]), vec![]),
        ];
        (vec![blocks[1].0], blocks)
    }

    fn car_bytes() -> Vec<u8> {
        let (roots, blocks) = sample();
        let mut out = Vec::new();
        write_car(&mut out, &roots, blocks).expect("write");
        out
    }

    #[test]
    fn round_trip() {
        let (roots, blocks) = sample();
        let car = read_car(&car_bytes()).expect("read");
        assert_eq!(car.roots, roots);
        assert_eq!(car.blocks, blocks);
    }

    #[test]
    fn header_is_canonical_dag_cbor() {
        let bytes = car_bytes();
        let mut rest = &bytes[..];
        let len = read_varint(&mut rest).expect("varint") as usize;
        let header = &rest[..len];
        // {"roots": [...], "version": 1}: map(2), "roots" before "version".
        assert_eq!(header[0], 0xa2);
        assert_eq!(&header[1..7], b"\x65roots");
        assert_eq!(&header[len - 9..], b"\x67version\x01");
        crate::block::decode_dag_cbor(header).expect("canonical");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = car_bytes();
        // Cutting at a section boundary leaves a valid, shorter CAR; anywhere else must fail.
        let mut ok_cuts = 0;
        for cut in 0..bytes.len() {
            if let Ok(car) = read_car(&bytes[..cut]) {
                ok_cuts += 1;
                assert!(car.blocks.len() < 3);
            }
        }
        // Boundaries: after the header, after block 1, after block 2.
        assert_eq!(ok_cuts, 3);
    }

    #[test]
    fn garbage_is_an_error() {
        for g in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x05hello",
            b"\x01\xa0",
            b"\x03\x81\x01\x02",
        ] {
            let err = read_car(g).expect_err("garbage");
            assert!(matches!(err, Error::Car(_)), "{err:?}");
        }
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        let mut bytes = car_bytes();
        // Append a section claiming 2^62 bytes.
        bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        let err = read_car(&bytes).expect_err("huge");
        assert!(err.to_string().contains("section 4"), "{err}");
        assert!(err.to_string().contains("block limit"), "{err}");
        // A header claiming more bytes than there are.
        let err = read_car(&[0xff, 0xff, 0x3f, 0xa0]).expect_err("huge header");
        assert!(err.to_string().contains("header length"), "{err}");
    }

    #[test]
    fn flipped_block_byte_is_named() {
        let mut bytes = car_bytes();
        let last = bytes.len() - 1;
        // The last section is the empty raw block; its CID's last byte is the last byte.
        bytes[last] ^= 1;
        let err = read_car(&bytes).expect_err("bad hash");
        assert!(err.to_string().contains("section 3"), "{err}");
        let mut bytes = car_bytes();
        let i = bytes
            .windows(5)
            .position(|w| w == b"hello")
            .expect("present");
        bytes[i] ^= 0x20;
        let err = read_car(&bytes).expect_err("bad hash");
        assert!(
            err.to_string().contains("section 1") && err.to_string().contains("hash"),
            "{err}"
        );
    }

    #[test]
    fn rejects_other_versions_and_bad_roots() {
        let header = |h: &[u8]| {
            let mut v = vec![h.len() as u8];
            v.extend_from_slice(h);
            v
        };
        // {"version": 2, "roots": []}
        let err = read_car(&header(b"\xa2\x65roots\x80\x67version\x02")).expect_err("v2");
        assert!(err.to_string().contains("v2"), "{err}");
        let err = read_car(&header(b"\xa2\x65roots\x81\x01\x67version\x01")).expect_err("roots");
        assert!(err.to_string().contains("roots"), "{err}");
        read_car(&header(b"\xa2\x65roots\x80\x67version\x01")).expect("empty CAR");
    }

    #[test]
    fn write_refuses_mismatched_blocks() {
        let err =
            write_car(Vec::new(), &[], [(cid_of(RAW, b"a"), b"b".to_vec())]).expect_err("mismatch");
        assert!(matches!(err, Error::Car(_)));
    }

    #[test]
    fn varints() {
        for n in [0u64, 1, 127, 128, 300, 1 << 20, (1 << 63) - 1] {
            let mut buf = Vec::new();
            write_varint(&mut buf, n).expect("write");
            let mut s = &buf[..];
            assert_eq!(read_varint(&mut s).expect("read"), n);
            assert!(s.is_empty());
        }
        assert!(read_varint(&mut &[0x80, 0x00][..]).is_err());
    }
}
