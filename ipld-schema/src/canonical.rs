//! A strict reader of canonical DAG-CBOR that builds nothing: it walks the bytes and says whether
//! they are exactly what encoding their value gives, so decoding needs no second encoding to
//! prove it (and an event's fixed fields need no generic IPLD tree).
//!
//! It is a fast path only. It accepts a subset of what the reference check (decode, re-encode,
//! compare bytes) accepts; whatever it refuses goes through that check, which gives the answer
//! and the error. So a refusal here costs time, never a different result, and the one thing it
//! must never do is accept non-canonical bytes (the fuzz target `event_verify` and the tests in
//! `event.rs` compare it with the reference).

use crate::{Cid, MAX_BODY_DEPTH};

/// CBOR major types this reader tells apart.
const UINT: u8 = 0;
const NEGINT: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const LIST: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
/// DAG-CBOR's one tag: a CID.
const CID_TAG: u64 = 42;

/// A position in a byte string being read; every method returns `None` on anything it does not
/// accept (truncation included) and then the reader is not used again.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Where the reader is.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Whether every byte was read.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Consumes `expected` exactly (a known header or map key).
    pub(crate) fn expect(&mut self, expected: &[u8]) -> Option<()> {
        (self.take(expected.len())? == expected).then_some(())
    }

    /// A header (major type, argument) in its shortest form, definite length only.
    fn head(&mut self) -> Option<(u8, u64)> {
        let first = *self.take(1)?.first()?;
        let major = first >> 5;
        let info = first & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24 => Some(u64::from(self.take(1)?[0])).filter(|a| *a >= 24)?,
            25 => Some(u64::from(u16::from_be_bytes(
                self.take(2)?.try_into().ok()?,
            )))
            .filter(|a| *a > 0xff)?,
            26 => Some(u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().ok()?,
            )))
            .filter(|a| *a > 0xffff)?,
            27 => Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
                .filter(|a| *a > 0xffff_ffff)?,
            _ => return None,
        };
        Some((major, arg))
    }

    /// A header of the given major type; its argument.
    fn head_of(&mut self, major: u8) -> Option<u64> {
        let (m, arg) = self.head()?;
        (m == major).then_some(arg)
    }

    /// An unsigned integer.
    pub(crate) fn uint(&mut self) -> Option<u64> {
        self.head_of(UINT)
    }

    /// A byte string's contents.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.head_of(BYTES)?).ok()?;
        self.take(len)
    }

    /// A text string's contents, checked to be UTF-8.
    pub(crate) fn text(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.head_of(TEXT)?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    /// A list header; its length.
    pub(crate) fn list(&mut self) -> Option<u64> {
        self.head_of(LIST)
    }

    /// A link (tag 42) whose CID bytes are that CID's own encoding.
    pub(crate) fn link(&mut self) -> Option<Cid> {
        (self.head_of(TAG)? == CID_TAG).then_some(())?;
        self.cid_bytes()
    }

    /// The contents of tag 42: bytes holding 0x00 and a CID in its canonical form.
    fn cid_bytes(&mut self) -> Option<Cid> {
        let b = self.bytes()?;
        let (&prefix, cid_bytes) = b.split_first()?;
        if prefix != 0 {
            return None;
        }
        let cid = Cid::try_from(cid_bytes).ok()?;
        (cid.to_bytes() == cid_bytes).then_some(cid)
    }

    /// Skips one canonical value nested at most [`MAX_BODY_DEPTH`] lists or maps deep, and says
    /// whether it holds a link.
    pub(crate) fn skip_value(&mut self) -> Option<bool> {
        let mut links = false;
        self.skip(0, &mut links)?;
        Some(links)
    }

    fn skip(&mut self, depth: usize, links: &mut bool) -> Option<()> {
        // Major type 7 has no length argument: only the values DAG-CBOR writes.
        match *self.bytes.get(self.pos)? {
            0xf4..=0xf6 => {
                self.pos += 1;
                return Some(());
            }
            0xfb => {
                let raw = self.take(9)?;
                let f = f64::from_be_bytes(raw[1..].try_into().ok()?);
                // NaN and infinities do not encode; negative zero is left to the reference.
                return (f.is_finite() && !(f == 0.0 && f.is_sign_negative())).then_some(());
            }
            b if b >> 5 == 7 => return None,
            _ => {}
        }
        let (major, arg) = self.head()?;
        match major {
            UINT | NEGINT => Some(()),
            BYTES | TEXT => {
                // Text is checked to be UTF-8 by the decoder that builds the value.
                self.take(usize::try_from(arg).ok()?).map(|_| ())
            }
            LIST => {
                if depth >= MAX_BODY_DEPTH {
                    return None;
                }
                for _ in 0..arg {
                    self.skip(depth + 1, links)?;
                }
                Some(())
            }
            MAP => {
                if depth >= MAX_BODY_DEPTH {
                    return None;
                }
                // Keys are strings, strictly increasing length first then bytewise (which
                // also rules out duplicates).
                let mut last: Option<&[u8]> = None;
                for _ in 0..arg {
                    let len = usize::try_from(self.head_of(TEXT)?).ok()?;
                    let key = self.take(len)?;
                    if let Some(last) = last
                        && (last.len(), last) >= (key.len(), key)
                    {
                        return None;
                    }
                    last = Some(key);
                    self.skip(depth + 1, links)?;
                }
                Some(())
            }
            TAG if arg == CID_TAG => {
                *links = true;
                self.cid_bytes().map(|_| ())
            }
            _ => None,
        }
    }
}

/// Whether `bytes` are one canonical DAG-CBOR value and nothing else, as far as this reader can
/// tell: `true` means re-encoding the decoded value gives `bytes`; `false` means "ask the
/// reference check".
pub(crate) fn is_canonical(bytes: &[u8]) -> bool {
    let mut r = Reader::new(bytes);
    r.skip_value().is_some() && r.at_end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{decode_dag_cbor_reference, encode_dag_cbor};
    use crate::{Ipld, cid_of};
    use std::collections::BTreeMap;

    #[test]
    fn accepts_what_encoding_writes() {
        let mut m = BTreeMap::new();
        m.insert("price".to_owned(), Ipld::Float(5.55));
        m.insert("n".to_owned(), Ipld::Integer(-70_000));
        m.insert("big".to_owned(), Ipld::Integer(u64::MAX.into()));
        m.insert("neg".to_owned(), Ipld::Integer(-(1i128 << 64)));
        m.insert("b".to_owned(), Ipld::Bytes(vec![1; 300]));
        m.insert("s".to_owned(), Ipld::String("é".repeat(40)));
        m.insert(
            "l".to_owned(),
            Ipld::List(vec![Ipld::Null, Ipld::Bool(true), Ipld::Bool(false)]),
        );
        m.insert("c".to_owned(), Ipld::Link(cid_of(0x71, b"x")));
        m.insert("zero".to_owned(), Ipld::Float(0.0));
        let v = Ipld::Map(m);
        let bytes = encode_dag_cbor(&v).expect("encode");
        assert!(is_canonical(&bytes));
        let mut r = Reader::new(&bytes);
        assert_eq!(r.skip_value(), Some(true), "holds a link");
    }

    #[test]
    fn refuses_what_the_reference_refuses() {
        let cid = cid_of(0x71, b"x").to_bytes();
        let mut tagged = vec![0xd8, 0x2a, 0x58, cid.len() as u8 + 1, 0x00];
        tagged.extend_from_slice(&cid);
        assert!(is_canonical(&tagged));
        let mut wrong_prefix = tagged.clone();
        wrong_prefix[4] = 0x01;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "keys out of order",
                vec![0xa2, 0x62, b'b', b'b', 1, 0x61, b'a', 1],
            ),
            (
                "keys bytewise out of order",
                vec![0xa2, 0x61, b'b', 1, 0x61, b'a', 1],
            ),
            ("duplicate keys", vec![0xa2, 0x61, b'a', 1, 0x61, b'a', 2]),
            ("integer key", vec![0xa1, 0x01, 0x01]),
            ("non-minimal integer", vec![0x18, 0x01]),
            ("non-minimal 16-bit", vec![0x19, 0x00, 0xff]),
            ("non-minimal 32-bit", vec![0x1a, 0x00, 0x00, 0xff, 0xff]),
            (
                "non-minimal 64-bit",
                vec![0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            ),
            ("non-minimal length", vec![0x58, 0x01, 0x00]),
            ("32-bit float", vec![0xfa, 0x3f, 0x80, 0x00, 0x00]),
            ("16-bit float", vec![0xf9, 0x3c, 0x00]),
            ("indefinite list", vec![0x9f, 0x01, 0xff]),
            ("trailing bytes", vec![0x01, 0x01]),
            ("undefined", vec![0xf7]),
            ("NaN", vec![0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]),
            ("infinity", vec![0xfb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0]),
            ("negative zero", vec![0xfb, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            ("truncated", vec![0xa1, 0x61]),
            ("empty", vec![]),
            ("unknown tag", vec![0xc1, 0x01]),
            ("tag 42 in long form", {
                let mut t = vec![0xd9, 0x00, 0x2a];
                t.extend_from_slice(&tagged[2..]);
                t
            }),
            ("CID without 0x00 prefix", wrong_prefix),
            ("CID cut short", tagged[..tagged.len() - 1].to_vec()),
        ];
        for (what, bytes) in &cases {
            assert!(!is_canonical(bytes), "{what} was accepted");
            // What the fast path refuses, the reference refuses too (these are all bad).
            assert!(decode_dag_cbor_reference(bytes).is_err(), "{what}");
        }
    }

    #[test]
    fn nesting_beyond_the_body_limit_is_left_to_the_reference() {
        let mut deep = vec![0x81u8; MAX_BODY_DEPTH];
        deep.push(0x01);
        assert!(is_canonical(&deep));
        let mut deeper = vec![0x81u8; MAX_BODY_DEPTH + 1];
        deeper.push(0x01);
        assert!(!is_canonical(&deeper));
    }
}
