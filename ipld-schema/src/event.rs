//! The event: building, signing, canonical encoding and strict decoding (docs/protocols.md).

use crate::block::{
    Block, check_depth, check_size, cid_of, decode_dag_cbor_reference, encode_dag_cbor,
};
use crate::canonical::Reader;
pub use crate::signer::SIGNATURE_LEN;
use crate::signer::Signer;
use crate::{Cid, DAG_CBOR, Error, Ipld, Keypair, PeerId, PublicKey, topic};
use std::collections::BTreeMap;

/// The event format version this crate writes and reads.
pub const VERSION: u64 = 1;

/// The eight keys of an event map, in canonical DAG-CBOR order.
pub const KEYS: [&str; 8] = ["v", "seq", "sig", "body", "prev", "time", "topic", "author"];

/// One event, the Rust mirror of `type Event` in `schema/tidings.ipldsch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Format version, 1.
    pub v: u64,
    /// The topic, e.g. `/stocks/euronext/CTT` (see [`crate::topic::validate`]).
    pub topic: String,
    /// The payload: any IPLD data-model value.
    pub body: Ipld,
    /// The publisher's public key, libp2p protobuf encoding (`PublicKey::encode_protobuf`).
    pub author: Vec<u8>,
    /// Per (author, topic) sequence number, starting at 1.
    pub seq: u64,
    /// Publisher clock, ms since the Unix epoch (advisory only).
    pub time: u64,
    /// Stream parents: the author's previous event on this topic first, then other heads.
    pub prev: Vec<Cid>,
    /// ed25519 signature over [`Event::signing_bytes`].
    pub sig: Vec<u8>,
}

impl Event {
    /// Builds and signs a v1 event (validates topic, seq >= 1, size <= MAX_BLOCK_SIZE).
    ///
    /// The keypair must be ed25519. Fails with [`Error::BadTopic`], [`Error::BadSeq`],
    /// [`Error::TooLarge`], [`Error::TooDeep`] or [`Error::Encode`] (NaN/infinite floats).
    pub fn sign(
        keypair: &Keypair,
        topic: &str,
        body: Ipld,
        seq: u64,
        time: u64,
        prev: Vec<Cid>,
    ) -> Result<Event, Error> {
        Self::sign_block(keypair, topic, body, seq, time, prev).map(|(e, _)| e)
    }

    /// Like [`Event::sign`], also returning the encoded block (saves encoding twice).
    ///
    /// Prepares the key for this one event; an author signing many uses a [`Signer`] and
    /// [`Event::sign_block_with`].
    pub fn sign_block(
        keypair: &Keypair,
        topic: &str,
        body: Ipld,
        seq: u64,
        time: u64,
        prev: Vec<Cid>,
    ) -> Result<(Event, Block), Error> {
        Self::sign_block_with(&Signer::new(keypair)?, topic, body, seq, time, prev)
    }

    /// [`Event::sign_block`] with a key prepared once ([`Signer`]).
    pub fn sign_block_with(
        signer: &Signer,
        topic: &str,
        body: Ipld,
        seq: u64,
        time: u64,
        prev: Vec<Cid>,
    ) -> Result<(Event, Block), Error> {
        topic::validate(topic)?;
        if seq < 1 {
            return Err(Error::BadSeq);
        }
        let mut event = Event {
            v: VERSION,
            topic: topic.to_owned(),
            body,
            author: signer.author().to_vec(),
            seq,
            time,
            prev,
            sig: Vec::new(),
        };
        let to_sign = event.signing_bytes()?;
        event.sig = signer.sign(&to_sign);
        // The block is the signed bytes with the `sig` entry put in: no second encoding (and
        // no second copy of the body) per published event.
        let block = Block::new_dag_cbor(with_sig_entry(&to_sign, &event)?)?;
        Ok((event, block))
    }

    /// The event as an IPLD map (all eight keys; without `sig` when `with_sig` is false).
    pub fn to_ipld(&self, with_sig: bool) -> Ipld {
        let mut m = BTreeMap::new();
        m.insert("v".to_owned(), Ipld::Integer(self.v.into()));
        m.insert("topic".to_owned(), Ipld::String(self.topic.clone()));
        m.insert("body".to_owned(), self.body.clone());
        m.insert("author".to_owned(), Ipld::Bytes(self.author.clone()));
        m.insert("seq".to_owned(), Ipld::Integer(self.seq.into()));
        m.insert("time".to_owned(), Ipld::Integer(self.time.into()));
        m.insert(
            "prev".to_owned(),
            Ipld::List(self.prev.iter().copied().map(Ipld::Link).collect()),
        );
        if with_sig {
            m.insert("sig".to_owned(), Ipld::Bytes(self.sig.clone()));
        }
        Ipld::Map(m)
    }

    /// Canonical DAG-CBOR encoding of the whole event; [`Error::TooLarge`] over 1 MiB.
    ///
    /// Written field by field ([`Event::write_canonical`]); [`Event::encode_reference`] is its
    /// definition.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        self.write_canonical(true)
    }

    /// [`Event::encode`] by its definition: the event as a generic IPLD map, encoded as any
    /// value is. Slower; the tests check [`Event::encode`] and [`Event::signing_bytes`] against
    /// it.
    pub fn encode_reference(&self, with_sig: bool) -> Result<Vec<u8>, Error> {
        encode_dag_cbor(&self.to_ipld(with_sig))
    }

    /// The event's canonical encoding (without the `sig` entry unless `with_sig`), written key
    /// by key in canonical order with only the body going through the generic encoder: the
    /// same bytes as [`Event::encode_reference`], without copying the body into a map first.
    /// Every publish encodes its event once, so this is on the publish path.
    fn write_canonical(&self, with_sig: bool) -> Result<Vec<u8>, Error> {
        // The event map nests the body one level down: this is `encode_dag_cbor`'s bound.
        check_depth(&self.body)?;
        let mut out =
            Vec::with_capacity(160 + self.topic.len() + self.author.len() + 48 * self.prev.len());
        out.push(if with_sig { MAP_SIGNED } else { MAP_UNSIGNED });
        out.extend_from_slice(KEY_V);
        cbor_head(&mut out, 0, self.v);
        out.extend_from_slice(KEY_SEQ);
        cbor_head(&mut out, 0, self.seq);
        if with_sig {
            out.extend_from_slice(KEY_SIG);
            cbor_head(&mut out, 2, self.sig.len() as u64);
            out.extend_from_slice(&self.sig);
        }
        out.extend_from_slice(KEY_BODY);
        let mut body =
            serde_ipld_dagcbor::ser::Serializer::new(serde_ipld_dagcbor::ser::BufWriter::new(out));
        serde::Serialize::serialize(&self.body, &mut body)
            .map_err(|e| Error::Encode(e.to_string()))?;
        let mut out = body.into_inner().into_inner();
        out.extend_from_slice(KEY_PREV);
        cbor_head(&mut out, 4, self.prev.len() as u64);
        for c in &self.prev {
            let bytes = c.to_bytes();
            // A link: tag 42 over a byte string of the identity multibase prefix and the CID.
            out.extend_from_slice(&[0xd8, 0x2a]);
            cbor_head(&mut out, 2, bytes.len() as u64 + 1);
            out.push(0x00);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(KEY_TIME);
        cbor_head(&mut out, 0, self.time);
        out.extend_from_slice(KEY_TOPIC);
        cbor_head(&mut out, 3, self.topic.len() as u64);
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(KEY_AUTHOR);
        cbor_head(&mut out, 2, self.author.len() as u64);
        out.extend_from_slice(&self.author);
        check_size(out.len())?;
        Ok(out)
    }

    /// Decodes an event block strictly: canonical DAG-CBOR only (re-encoding is byte-identical),
    /// a map with exactly the eight schema keys of the right kinds, `v == 1`, at most 1 MiB.
    ///
    /// Does not check the signature, topic or seq: [`crate::verify()`] does.
    ///
    /// A block laid out as tidings writes events is read field by field, its canonical form
    /// checked as it is read ([`crate::canonical`]), with only the body built as generic IPLD;
    /// anything else goes through [`Event::decode_reference`], which gives the same answer.
    pub fn decode(bytes: &[u8]) -> Result<Event, Error> {
        check_size(bytes.len())?;
        if let Some(event) = read_canonical(bytes) {
            return Ok(event);
        }
        Event::decode_reference(bytes)
    }

    /// [`Event::decode`] by its definition: decode as generic IPLD, check the bytes are that
    /// value's canonical encoding by encoding it again, then check the shape. Slower; the tests
    /// and the `event_verify` fuzz target check [`Event::decode`] against it.
    pub fn decode_reference(bytes: &[u8]) -> Result<Event, Error> {
        let v = decode_dag_cbor_reference(bytes)?;
        Event::from_ipld(v)
    }

    /// Decodes a block that was verified before (read back from a store): the shape is checked,
    /// the canonical form need not be (the fast reader checks it anyway, at no extra cost).
    /// `None` for a block that is not an event.
    pub fn decode_stored(bytes: &[u8]) -> Option<Event> {
        read_canonical(bytes).or_else(|| {
            serde_ipld_dagcbor::from_slice::<Ipld>(bytes)
                .ok()
                .and_then(|v| Event::from_ipld(v).ok())
        })
    }

    /// The links of a stored event block, `prev` first and then those in the body (the order of
    /// `prev` followed by [`Event::body_links`]), for walking a DAG without building the event:
    /// a body without links is skipped over, not decoded. `None` for a block that is not an
    /// event.
    pub fn links_stored(bytes: &[u8]) -> Option<Vec<Cid>> {
        read_prev_if_body_unlinked(bytes).or_else(|| {
            Event::decode_stored(bytes)
                .map(|e| e.prev.iter().copied().chain(e.body_links()).collect())
        })
    }

    /// Builds an event from its IPLD map form, checking the shape as [`Event::decode`] does.
    pub fn from_ipld(v: Ipld) -> Result<Event, Error> {
        let Ipld::Map(mut m) = v else {
            return Err(shape(format!("an event is a map, found {}", kind(&v))));
        };
        if let Some(k) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(shape(format!("unknown key {k:?} in event")));
        }
        let mut take = |k: &str| {
            m.remove(k)
                .ok_or_else(|| shape(format!("missing key {k:?}")))
        };
        let version = uint("v", take("v")?)?;
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let topic = match take("topic")? {
            Ipld::String(s) => s,
            other => return Err(wrong("topic", "a string", &other)),
        };
        let body = take("body")?;
        check_depth(&body)?;
        let author = bytes("author", take("author")?)?;
        let seq = uint("seq", take("seq")?)?;
        let time = uint("time", take("time")?)?;
        let prev = match take("prev")? {
            Ipld::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Ipld::Link(c) => Ok(c),
                    other => Err(wrong("prev", "a list of links", &other)),
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => return Err(wrong("prev", "a list of links", &other)),
        };
        let sig = bytes("sig", take("sig")?)?;
        Ok(Event {
            v: version,
            topic,
            body,
            author,
            seq,
            time,
            prev,
            sig,
        })
    }

    /// Encodes and addresses the event: CIDv1, dag-cbor, sha2-256.
    pub fn to_block(&self) -> Result<Block, Error> {
        let data = self.encode()?;
        Ok(Block {
            cid: cid_of(DAG_CBOR, &data),
            data,
        })
    }

    /// The author's public key; [`Error::BadAuthor`] unless it is a canonically encoded
    /// ed25519 key in libp2p protobuf form.
    pub fn author_key(&self) -> Result<PublicKey, Error> {
        let key = PublicKey::try_decode_protobuf(&self.author)
            .map_err(|e| Error::BadAuthor(e.to_string()))?;
        if key.key_type() != libp2p_identity::KeyType::Ed25519 {
            return Err(Error::BadAuthor(format!(
                "{:?} key, tidings authors are ed25519",
                key.key_type()
            )));
        }
        if key.encode_protobuf() != self.author {
            return Err(Error::BadAuthor("non-canonical protobuf encoding".into()));
        }
        Ok(key)
    }

    /// The author's libp2p peer id (`12D3KooW...`).
    pub fn author_peer_id(&self) -> Result<PeerId, Error> {
        Ok(self.author_key()?.to_peer_id())
    }

    /// The author's peer id as text, for showing a verified event: the identity multihash of
    /// the key as it is encoded, without decoding the key (an ed25519 point decompression, a
    /// tenth of the cost of delivering an event as JSON). For an event that did not pass
    /// [`crate::verify()`], use [`Event::author_peer_id`], which checks the key.
    pub fn author_text(&self) -> Option<String> {
        thread_local! {
            // The last author shown on this thread: a stream's events mostly share one, and
            // base58 costs more than the rest of an event's JSON header.
            static LAST: std::cell::RefCell<Option<(Vec<u8>, String)>> =
                const { std::cell::RefCell::new(None) };
        }
        if let Some(text) = LAST.with_borrow(|last| {
            last.as_ref()
                .filter(|(author, _)| *author == self.author)
                .map(|(_, text)| text.clone())
        }) {
            return Some(text);
        }
        // An identity multihash: code 0, then the length as one varint byte.
        let len = u8::try_from(self.author.len()).ok().filter(|l| *l < 0x80)?;
        let mut mh = Vec::with_capacity(self.author.len() + 2);
        mh.extend_from_slice(&[0x00, len]);
        mh.extend_from_slice(&self.author);
        let text = PeerId::from_bytes(&mh).ok().map(|p| p.to_base58())?;
        LAST.with_borrow_mut(|last| *last = Some((self.author.clone(), text.clone())));
        Some(text)
    }

    /// DAG-CBOR of the event map without `sig`: the bytes the signature covers.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, Error> {
        self.write_canonical(false)
    }

    /// [`Event::signing_bytes`] cut out of `block`, this event's canonical encoding (as
    /// [`Event::decode`] accepted it): the block without its `sig` entry, which saves encoding
    /// the event again for every block verified. Falls back to encoding when `block` is not laid
    /// out so (it is then not this event's canonical block).
    pub fn signing_bytes_in(&self, block: &[u8]) -> Result<Vec<u8>, Error> {
        let at = sig_offset(self.v, self.seq);
        let entry_end = at + SIG_ENTRY.len() + SIGNATURE_LEN;
        if block.first() == Some(&MAP_SIGNED)
            && block.get(at..at + SIG_ENTRY.len()) == Some(&SIG_ENTRY[..])
            && block.get(at + SIG_ENTRY.len()..entry_end) == Some(self.sig.as_slice())
        {
            let mut out = Vec::with_capacity(block.len() - SIG_ENTRY.len() - SIGNATURE_LEN);
            out.push(MAP_UNSIGNED);
            out.extend_from_slice(&block[1..at]);
            out.extend_from_slice(&block[entry_end..]);
            return Ok(out);
        }
        self.signing_bytes()
    }

    /// Checks the signature against the author key (only the signature; see [`crate::verify()`]).
    pub fn verify_signature(&self) -> Result<(), Error> {
        self.verify_signature_over(&self.signing_bytes()?)
    }

    /// [`Event::verify_signature`] with the signing bytes given (see
    /// [`Event::signing_bytes_in`]).
    pub fn verify_signature_over(&self, signing_bytes: &[u8]) -> Result<(), Error> {
        let key = self.author_key()?;
        if self.sig.len() != SIGNATURE_LEN || !key.verify(signing_bytes, &self.sig) {
            return Err(Error::BadSignature);
        }
        Ok(())
    }

    /// Links inside `body` (for DAG traversal beyond `prev`), in depth-first order.
    pub fn body_links(&self) -> Vec<Cid> {
        let mut out = Vec::new();
        let mut stack = vec![&self.body];
        while let Some(v) = stack.pop() {
            match v {
                Ipld::Link(c) => out.push(*c),
                Ipld::List(items) => stack.extend(items.iter().rev()),
                Ipld::Map(m) => stack.extend(m.values().rev()),
                _ => {}
            }
        }
        out
    }
}

/// The map headers of an event with and without `sig`, and its keys as tidings writes them,
/// in canonical order: what the fast reader expects and the writer writes.
const MAP_SIGNED: u8 = 0xa8;
const MAP_UNSIGNED: u8 = 0xa7;
const KEY_V: &[u8] = b"\x61v";
const KEY_SEQ: &[u8] = b"\x63seq";
const KEY_SIG: &[u8] = b"\x63sig";
const KEY_BODY: &[u8] = b"\x64body";
const KEY_PREV: &[u8] = b"\x64prev";
const KEY_TIME: &[u8] = b"\x64time";
const KEY_TOPIC: &[u8] = b"\x65topic";
const KEY_AUTHOR: &[u8] = b"\x66author";

/// The fast path of [`Event::decode`]: the eight fields read in place, each checked canonical,
/// the body skipped over (checked) and then decoded alone. `None` for anything else, which the
/// reference path then decides (and explains).
fn read_canonical(bytes: &[u8]) -> Option<Event> {
    let mut r = Reader::new(bytes);
    let (v, seq, sig) = read_to_body(&mut r)?;
    if v != VERSION {
        return None;
    }
    let sig = sig.to_vec();
    let start = r.pos();
    r.skip_value()?;
    let body = serde_ipld_dagcbor::from_slice::<Ipld>(bytes.get(start..r.pos())?).ok()?;
    let prev = read_prev(&mut r)?;
    r.expect(KEY_TIME)?;
    let time = r.uint()?;
    r.expect(KEY_TOPIC)?;
    let topic = r.text()?.to_owned();
    r.expect(KEY_AUTHOR)?;
    let author = r.bytes()?.to_vec();
    r.at_end().then_some(Event {
        v,
        topic,
        body,
        author,
        seq,
        time,
        prev,
        sig,
    })
}

/// `prev` of an event block whose body holds no link; `None` otherwise (or when the block is
/// not laid out as tidings writes events).
fn read_prev_if_body_unlinked(bytes: &[u8]) -> Option<Vec<Cid>> {
    let mut r = Reader::new(bytes);
    read_to_body(&mut r)?;
    if r.skip_value()? {
        return None;
    }
    read_prev(&mut r)
}

/// The fields before the body (`v`, `seq`, `sig`), read up to and including the `body` key.
fn read_to_body<'a>(r: &mut Reader<'a>) -> Option<(u64, u64, &'a [u8])> {
    r.expect(&[MAP_SIGNED])?;
    r.expect(KEY_V)?;
    let v = r.uint()?;
    r.expect(KEY_SEQ)?;
    let seq = r.uint()?;
    r.expect(KEY_SIG)?;
    let sig = r.bytes()?;
    r.expect(KEY_BODY)?;
    Some((v, seq, sig))
}

/// The `prev` key and its list of links.
fn read_prev(r: &mut Reader<'_>) -> Option<Vec<Cid>> {
    r.expect(KEY_PREV)?;
    let n = r.list()?;
    // The length is the sender's word: grow as links are read, not by it.
    let mut prev = Vec::with_capacity(usize::try_from(n).ok()?.min(16));
    for _ in 0..n {
        prev.push(r.link()?);
    }
    Some(prev)
}

/// The `sig` entry's key and byte-string header (64 bytes) in canonical DAG-CBOR.
const SIG_ENTRY: [u8; 6] = [0x63, b's', b'i', b'g', 0x58, SIGNATURE_LEN as u8];

/// Bytes of a CBOR unsigned integer's encoding (header included).
fn uint_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Appends a CBOR head in its shortest form: major type `major` (0 unsigned, 2 bytes, 3 text,
/// 4 array) with argument `n`.
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Where the `sig` entry starts in an event's canonical encoding: keys are ordered length
/// first, so the map header, then `v` (key 2 bytes) and `seq` (key 4 bytes), then `sig`.
fn sig_offset(v: u64, seq: u64) -> usize {
    1 + 2 + uint_len(v) + 4 + uint_len(seq)
}

/// The signed event's canonical encoding from its signing bytes (the map of 7 without `sig`):
/// the same bytes with the map header of 8 and the `sig` entry put in after `seq`.
fn with_sig_entry(signing: &[u8], event: &Event) -> Result<Vec<u8>, Error> {
    let at = sig_offset(event.v, event.seq);
    if signing.first() != Some(&MAP_UNSIGNED)
        || signing.len() < at
        || event.sig.len() != SIGNATURE_LEN
    {
        return event.encode();
    }
    let mut out = Vec::with_capacity(signing.len() + SIG_ENTRY.len() + SIGNATURE_LEN);
    out.push(MAP_SIGNED);
    out.extend_from_slice(&signing[1..at]);
    out.extend_from_slice(&SIG_ENTRY);
    out.extend_from_slice(&event.sig);
    out.extend_from_slice(&signing[at..]);
    Ok(out)
}

fn shape(msg: String) -> Error {
    Error::Decode(format!("not a tidings event: {msg}"))
}

fn wrong(key: &str, want: &str, found: &Ipld) -> Error {
    shape(format!("`{key}` must be {want}, found {}", kind(found)))
}

fn uint(key: &str, v: Ipld) -> Result<u64, Error> {
    match v {
        Ipld::Integer(i) => u64::try_from(i).map_err(|_| {
            shape(format!(
                "`{key}` must be an integer from 0 to 2^64-1, found {i}"
            ))
        }),
        other => Err(wrong(key, "an integer", &other)),
    }
}

fn bytes(key: &str, v: Ipld) -> Result<Vec<u8>, Error> {
    match v {
        Ipld::Bytes(b) => Ok(b),
        other => Err(wrong(key, "bytes", &other)),
    }
}

/// A short name for the kind of an IPLD value, for error messages.
pub(crate) fn kind(v: &Ipld) -> &'static str {
    match v {
        Ipld::Null => "null",
        Ipld::Bool(_) => "a bool",
        Ipld::Integer(_) => "an integer",
        Ipld::Float(_) => "a float",
        Ipld::String(_) => "a string",
        Ipld::Bytes(_) => "bytes",
        Ipld::List(_) => "a list",
        Ipld::Map(_) => "a map",
        Ipld::Link(_) => "a link",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{body, keypair};
    use crate::{MAX_BLOCK_SIZE, MAX_BODY_DEPTH};

    fn sample() -> Event {
        Event::sign(
            &keypair(1),
            "/stocks/euronext/CTT",
            body(),
            1,
            1_763_700_000_000,
            vec![],
        )
        .expect("sign")
    }

    #[test]
    fn sign_encode_decode_round_trip() {
        let e = sample();
        assert_eq!(e.v, 1);
        assert_eq!(e.sig.len(), SIGNATURE_LEN);
        let bytes = e.encode().expect("encode");
        let d = Event::decode(&bytes).expect("decode");
        assert_eq!(d, e);
        assert_eq!(d.encode().expect("re-encode"), bytes);
        d.verify_signature().expect("signature");
        let b = e.to_block().expect("block");
        assert_eq!(b.data, bytes);
        assert_eq!(b.cid, cid_of(DAG_CBOR, &bytes));
        assert_eq!(b.cid.codec(), DAG_CBOR);
    }

    #[test]
    fn sign_is_deterministic() {
        // ed25519 is deterministic and the encoding canonical: same inputs, same CID.
        assert_eq!(
            sample().to_block().expect("a"),
            sample().to_block().expect("b")
        );
    }

    #[test]
    fn encoding_layout_is_canonical() {
        let e = sample();
        let bytes = e.encode().expect("encode");
        assert_eq!(bytes[0], 0xa8, "map of 8");
        // Keys appear in length-first order: v, seq, sig, body, prev, time, topic, author.
        let mut last = 0;
        for k in KEYS {
            let mut needle = vec![0x60 + k.len() as u8];
            needle.extend_from_slice(k.as_bytes());
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .expect("key present");
            assert!(at >= last, "{k} out of order");
            last = at;
        }
        // author and sig are byte strings (major type 2), not arrays.
        let sig_at = bytes.windows(4).position(|w| w == b"\x63sig").expect("sig");
        assert_eq!(&bytes[sig_at + 4..sig_at + 6], &[0x58, 64]);
        let signing = e.signing_bytes().expect("signing bytes");
        assert_eq!(signing[0], 0xa7, "map of 7");
        assert!(!signing.windows(4).any(|w| w == b"\x63sig"));
    }

    #[test]
    fn spliced_encodings_equal_the_full_encodings() {
        // seq at every CBOR integer width, so the `sig` entry's offset moves.
        for seq in [
            1,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
        ] {
            let kp = keypair(3);
            let (e, block) = Event::sign_block(&kp, "/a/b", body(), seq, 1_700_000_000_000, vec![])
                .expect("sign");
            assert_eq!(block.data, e.encode().expect("encode"), "seq {seq}");
            assert_eq!(block, e.to_block().expect("block"), "seq {seq}");
            assert_eq!(
                e.signing_bytes_in(&block.data).expect("cut"),
                e.signing_bytes().expect("signing"),
                "seq {seq}"
            );
            assert!(
                e.verify_signature_over(&e.signing_bytes_in(&block.data).expect("cut"))
                    .is_ok()
            );
        }
        // Bytes that are not the event's canonical block: encoded afresh, not cut.
        let e = sample();
        assert_eq!(
            e.signing_bytes_in(b"\xa8junk").expect("fallback"),
            e.signing_bytes().expect("signing")
        );
        let mut other = e.encode().expect("encode");
        let at = other.windows(4).position(|w| w == b"\x63sig").expect("sig") + 6;
        other[at] ^= 1;
        assert_eq!(
            e.signing_bytes_in(&other).expect("fallback"),
            e.signing_bytes().expect("signing")
        );
    }

    #[test]
    fn sign_validates_inputs() {
        let k = keypair(1);
        assert!(matches!(
            Event::sign(&k, "/a", body(), 0, 0, vec![]),
            Err(Error::BadSeq)
        ));
        assert!(matches!(
            Event::sign(&k, "a", body(), 1, 0, vec![]),
            Err(Error::BadTopic(_))
        ));
        assert!(matches!(
            Event::sign(&k, "/a/*", body(), 1, 0, vec![]),
            Err(Error::BadTopic(_))
        ));
        assert!(matches!(
            Event::sign(&k, "/a", Ipld::Float(f64::NAN), 1, 0, vec![]),
            Err(Error::Encode(_))
        ));
        let mut deep = Ipld::Null;
        for _ in 0..=MAX_BODY_DEPTH {
            deep = Ipld::List(vec![deep]);
        }
        assert!(matches!(
            Event::sign(&k, "/a", deep, 1, 0, vec![]),
            Err(Error::TooDeep { .. })
        ));
        let mut ok = Ipld::Null;
        for _ in 0..MAX_BODY_DEPTH {
            ok = Ipld::List(vec![ok]);
        }
        let e = Event::sign(&k, "/a", ok, 1, 0, vec![]).expect("depth limit itself is fine");
        Event::decode(&e.encode().expect("encode")).expect("and decodes");
    }

    #[test]
    fn oversized_events_are_refused_clearly() {
        let k = keypair(1);
        let err = Event::sign(&k, "/a", Ipld::Bytes(vec![7; MAX_BLOCK_SIZE]), 1, 0, vec![])
            .expect_err("too large");
        match &err {
            Error::TooLarge { size, max } => {
                assert!(*size > MAX_BLOCK_SIZE);
                assert_eq!(*max, MAX_BLOCK_SIZE);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains("too large"), "{err}");
        // Just under the limit works; the block is at most 1 MiB.
        let e = Event::sign(
            &k,
            "/a",
            Ipld::Bytes(vec![7; MAX_BLOCK_SIZE - 300]),
            1,
            0,
            vec![],
        )
        .expect("fits");
        assert!(e.encode().expect("encode").len() <= MAX_BLOCK_SIZE);
        // Decoding refuses oversized input before parsing it.
        assert!(matches!(
            Event::decode(&vec![0u8; MAX_BLOCK_SIZE + 1]),
            Err(Error::TooLarge { .. })
        ));
    }

    /// The errors the direct encoder gives are the reference's: a body too deep, a float
    /// DAG-CBOR cannot carry, an event too large (and one just under the limit encodes).
    #[test]
    fn fast_encoding_fails_as_the_reference_does() {
        let mut deep = Ipld::Integer(1);
        for _ in 0..MAX_BODY_DEPTH {
            deep = Ipld::List(vec![deep]);
        }
        let bodies = [
            Ipld::List(vec![deep.clone()]),
            deep,
            Ipld::Float(f64::NAN),
            Ipld::List(vec![Ipld::Float(f64::INFINITY)]),
            Ipld::Bytes(vec![7; MAX_BLOCK_SIZE]),
            Ipld::Bytes(vec![7; MAX_BLOCK_SIZE - 300]),
        ];
        for b in bodies {
            let mut e = sample();
            e.body = b;
            for with_sig in [false, true] {
                let fast = if with_sig {
                    e.encode()
                } else {
                    e.signing_bytes()
                };
                match (fast, e.encode_reference(with_sig)) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b),
                    (Err(a), Err(b)) => {
                        assert_eq!(std::mem::discriminant(&a), std::mem::discriminant(&b));
                        if matches!(e.body, Ipld::Float(_) | Ipld::List(_))
                            && let Error::Encode(m) = &a
                        {
                            assert!(m.contains("finite"), "{m}");
                        }
                    }
                    (a, b) => panic!("fast {a:?}, reference {b:?}"),
                }
            }
        }
    }

    #[test]
    fn decode_rejects_wrong_shapes() {
        let good = sample().to_ipld(true);
        let Ipld::Map(good) = good else { panic!("map") };
        type Edit = Box<dyn Fn(&mut BTreeMap<String, Ipld>)>;
        let variants: Vec<(&str, Edit)> = vec![
            (
                "missing sig",
                Box::new(|m| {
                    m.remove("sig");
                }),
            ),
            (
                "missing body",
                Box::new(|m| {
                    m.remove("body");
                }),
            ),
            (
                "extra key",
                Box::new(|m| {
                    m.insert("extra".into(), Ipld::Null);
                }),
            ),
            (
                "v = 2",
                Box::new(|m| {
                    m.insert("v".into(), Ipld::Integer(2));
                }),
            ),
            (
                "v string",
                Box::new(|m| {
                    m.insert("v".into(), Ipld::String("1".into()));
                }),
            ),
            (
                "seq negative",
                Box::new(|m| {
                    m.insert("seq".into(), Ipld::Integer(-1));
                }),
            ),
            (
                "time float",
                Box::new(|m| {
                    m.insert("time".into(), Ipld::Float(1.0));
                }),
            ),
            (
                "author list",
                Box::new(|m| {
                    m.insert("author".into(), Ipld::List(vec![Ipld::Integer(1)]));
                }),
            ),
            (
                "sig string",
                Box::new(|m| {
                    m.insert("sig".into(), Ipld::String("x".into()));
                }),
            ),
            (
                "topic bytes",
                Box::new(|m| {
                    m.insert("topic".into(), Ipld::Bytes(b"/a".to_vec()));
                }),
            ),
            (
                "prev of strings",
                Box::new(|m| {
                    m.insert("prev".into(), Ipld::List(vec![Ipld::String("bafy".into())]));
                }),
            ),
            (
                "prev a link",
                Box::new(|m| {
                    m.insert("prev".into(), Ipld::Link(cid_of(DAG_CBOR, b"")));
                }),
            ),
        ];
        for (what, f) in variants {
            let mut m = good.clone();
            f(&mut m);
            let bytes = encode_dag_cbor(&Ipld::Map(m)).expect("encode");
            let err = Event::decode(&bytes).expect_err(what);
            assert!(
                matches!(err, Error::Decode(_) | Error::BadVersion(2)),
                "{what}: {err:?}"
            );
        }
        for bytes in [&[0x80][..], &[0x01], &[0xa0]] {
            assert!(matches!(Event::decode(bytes), Err(Error::Decode(_))));
        }
    }

    /// The fixed fields are read by the fast path, not by the generic decoder: each written in a
    /// longer form than canonical must be refused there too, as the reference refuses it.
    #[test]
    fn long_forms_of_the_fixed_fields_are_refused() {
        let prev = vec![cid_of(DAG_CBOR, b"p")];
        let e = Event::sign(&keypair(1), "/stocks/euronext/CTT", body(), 5, 7, prev).expect("sign");
        let good = e.encode().expect("encode");
        assert!(
            read_canonical(&good).is_some(),
            "a tidings event takes the fast path"
        );
        assert_eq!(read_prev_if_body_unlinked(&good), Some(e.prev.clone()));
        // (key, the value's canonical header, the same in a longer form)
        let cases: [(&[u8], &[u8], &[u8]); 7] = [
            (b"\x61v", &[0x01], &[0x18, 0x01]),
            (KEY_SEQ, &[0x05], &[0x18, 0x05]),
            (KEY_SIG, &[0x58, 0x40], &[0x59, 0x00, 0x40]),
            (KEY_PREV, &[0x81], &[0x98, 0x01]),
            (KEY_TIME, &[0x07], &[0x19, 0x00, 0x07]),
            (KEY_TOPIC, &[0x74], &[0x78, 0x14]),
            (KEY_AUTHOR, &[0x58, 0x24], &[0x5a, 0x00, 0x00, 0x00, 0x24]),
        ];
        for (key, short, long) in cases {
            let at = good
                .windows(key.len() + short.len())
                .position(|w| w == [key, short].concat())
                .expect("the field is in the block")
                + key.len();
            let bytes = [&good[..at], long, &good[at + short.len()..]].concat();
            let what = String::from_utf8_lossy(&key[1..]).into_owned();
            assert!(
                read_canonical(&bytes).is_none(),
                "{what} in a long form was read"
            );
            let err = Event::decode(&bytes).expect_err(&what);
            assert_eq!(
                err.to_string(),
                Event::decode_reference(&bytes)
                    .expect_err(&what)
                    .to_string()
            );
        }
    }

    #[test]
    fn author_key_and_peer_id() {
        let k = keypair(1);
        let e = sample();
        assert_eq!(e.author_key().expect("key"), k.public());
        assert_eq!(e.author_peer_id().expect("peer"), k.public().to_peer_id());
        let mut bad = e.clone();
        bad.author = vec![1, 2, 3];
        assert!(matches!(bad.author_key(), Err(Error::BadAuthor(_))));
        // The text shown for a verified event is the checked peer id, without the check.
        assert_eq!(
            e.author_text(),
            Some(e.author_peer_id().expect("peer id").to_base58())
        );
        // The last author's text is kept per thread: another author, then the first again.
        let other = Event::sign(&keypair(2), "/a", body(), 1, 0, vec![]).expect("sign");
        assert_eq!(
            other.author_text(),
            Some(keypair(2).public().to_peer_id().to_base58())
        );
        assert_eq!(e.author_text(), Some(k.public().to_peer_id().to_base58()));
    }

    #[test]
    fn body_links_finds_nested_links() {
        let a = cid_of(DAG_CBOR, b"a");
        let b = cid_of(crate::RAW, b"b");
        let body = Ipld::Map(BTreeMap::from([
            ("x".to_owned(), Ipld::Link(a)),
            (
                "y".to_owned(),
                Ipld::List(vec![
                    Ipld::Integer(1),
                    Ipld::Map(BTreeMap::from([("z".to_owned(), Ipld::Link(b))])),
                ]),
            ),
        ]));
        let e = Event::sign(&keypair(1), "/a", body, 1, 0, vec![a]).expect("sign");
        assert_eq!(e.body_links(), vec![a, b]);
        assert!(sample().body_links().is_empty());
    }
}
