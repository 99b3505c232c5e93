//! Verification of event blocks and of the links between events of a stream.

use crate::{Block, Cid, DAG_CBOR, Error, Event, topic};

/// Verifies an event block: hash matches CID; decodes as Event; v == 1; signature valid for
/// author; seq >= 1; topic well-formed.
///
/// The CID must be dag-cbor with a sha2-256 multihash. Returns the decoded event.
pub fn verify(cid: &Cid, block: &[u8]) -> Result<Event, Error> {
    let event = verify_unsigned(cid, block)?;
    event.verify_signature_over(&event.signing_bytes_in(block)?)?;
    Ok(event)
}

/// Every check of [`verify`] but the signature.
fn verify_unsigned(cid: &Cid, block: &[u8]) -> Result<Event, Error> {
    if cid.codec() != DAG_CBOR {
        return Err(Error::BadCodec {
            found: cid.codec(),
            expected: DAG_CBOR,
        });
    }
    Block::check(cid, block)?;
    let event = Event::decode(block)?;
    if event.v != crate::event::VERSION {
        return Err(Error::BadVersion(event.v));
    }
    topic::validate(&event.topic)?;
    if event.seq < 1 {
        return Err(Error::BadSeq);
    }
    Ok(event)
}

/// [`verify`] for many blocks at once, with the signatures checked as one ed25519 batch, each
/// author's key terms merged ([`crate::batch`]: about three times as fast per signature as one
/// by one); a lone signature is checked on its own. Returns one result per block, in order.
///
/// When the batch fails, each signature is checked on its own so the bad blocks are named and
/// the good ones kept: a hostile sender cannot make honest blocks look bad.
pub fn verify_batch<'a>(
    blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>,
) -> Vec<Result<Event, Error>> {
    let mut out: Vec<Result<Event, Error>> = Vec::new();
    // Signing bytes, signature and key of every block that passed the other checks.
    let mut pending: Vec<(
        usize,
        Vec<u8>,
        ed25519_dalek::Signature,
        ed25519_dalek::VerifyingKey,
    )> = Vec::new();
    let mut last_key: Option<(Vec<u8>, ed25519_dalek::VerifyingKey)> = None;
    for (cid, data) in blocks {
        let i = out.len();
        let checked = verify_unsigned(cid, data).and_then(|event| {
            let key = match &last_key {
                Some((author, key)) if *author == event.author => *key,
                _ => {
                    let key = dalek_key(&event)?;
                    last_key = Some((event.author.clone(), key));
                    key
                }
            };
            let sig = ed25519_dalek::Signature::from_slice(&event.sig)
                .map_err(|_| Error::BadSignature)?;
            let msg = event.signing_bytes_in(data)?;
            Ok((event, msg, key, sig))
        });
        match checked {
            Ok((event, msg, key, sig)) => {
                pending.push((i, msg, sig, key));
                out.push(Ok(event));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let items: Vec<crate::batch::Item<'_>> = pending
        .iter()
        .map(|(_, msg, sig, key)| crate::batch::Item {
            msg,
            sig: *sig,
            key: *key,
        })
        .collect();
    // A lone signature is checked on its own: as a batch of one it costs about 1.2 times as
    // much (the batch's own hashes, R decompressed, no basepoint table), and a broker under
    // a steady stream gets many requests of one block.
    if items.len() < 2 || !crate::batch::verify_all(&items) {
        for (i, msg, sig, key) in &pending {
            if ed25519_dalek::Verifier::verify(key, msg, sig).is_err() {
                out[*i] = Err(Error::BadSignature);
            }
        }
    }
    out
}

/// The author's key in ed25519-dalek form (what batch verification takes).
fn dalek_key(event: &Event) -> Result<ed25519_dalek::VerifyingKey, Error> {
    let key = event.author_key()?;
    let ed = key
        .try_into_ed25519()
        .map_err(|e| Error::BadAuthor(e.to_string()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&ed.to_bytes())
        .map_err(|e| Error::BadAuthor(e.to_string()))
}

/// Checks one edge of a stream DAG, `child.prev ∋ parent_cid`: same topic; if same author,
/// child.seq == parent.seq + 1; and the parent's CID is in `child.prev`.
///
/// Both events are assumed to have passed [`verify`] (and `parent_cid` to address `parent`).
pub fn verify_link(child: &Event, parent_cid: &Cid, parent: &Event) -> Result<(), Error> {
    if !child.prev.contains(parent_cid) {
        return Err(Error::Link(format!(
            "{parent_cid} is not among the child's prev links"
        )));
    }
    if child.topic != parent.topic {
        return Err(Error::Link(format!(
            "child topic {:?} differs from parent topic {:?}",
            child.topic, parent.topic
        )));
    }
    if child.author == parent.author && parent.seq.checked_add(1) != Some(child.seq) {
        return Err(Error::Link(format!(
            "same author: child seq {} must be parent seq {} + 1",
            child.seq, parent.seq
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{body, keypair};
    use crate::{Ipld, RAW, cid_of};

    fn signed(seed: u8, topic: &str, seq: u64, prev: Vec<Cid>) -> (Event, Block) {
        Event::sign_block(&keypair(seed), topic, body(), seq, 42, prev).expect("sign")
    }

    #[test]
    fn verify_accepts_good_blocks() {
        let (e, b) = signed(1, "/stocks/x", 1, vec![]);
        assert_eq!(verify(&b.cid, &b.data).expect("valid"), e);
    }

    #[test]
    fn verify_batch_agrees_with_verify_and_names_the_bad_blocks() {
        let mut blocks: Vec<Block> = Vec::new();
        let mut prev = vec![];
        for seq in 1..=20u64 {
            // Two authors, so the key cache is exercised across changes.
            let (_, b) = signed(1 + (seq % 2) as u8, "/stocks/x", seq, prev);
            prev = vec![b.cid];
            blocks.push(b);
        }
        let all_good = verify_batch(blocks.iter().map(|b| (&b.cid, b.data.as_slice())));
        assert!(all_good.iter().all(|r| r.is_ok()));
        for (r, b) in all_good.iter().zip(&blocks) {
            assert_eq!(r.as_ref().ok(), verify(&b.cid, &b.data).ok().as_ref());
        }
        // A forged signature (re-addressed, so only the signature is wrong) and a wrong CID.
        let mut forged = Event::decode(&blocks[7].data).expect("decode");
        forged.body = Ipld::Integer(7);
        blocks[7] = forged.to_block().expect("block");
        blocks[12].cid = blocks[13].cid;
        let results = verify_batch(blocks.iter().map(|b| (&b.cid, b.data.as_slice())));
        for (i, r) in results.iter().enumerate() {
            match i {
                7 => assert!(matches!(r, Err(Error::BadSignature)), "{r:?}"),
                12 => assert!(matches!(r, Err(Error::BadHash)), "{r:?}"),
                _ => assert!(r.is_ok(), "block {i}: {r:?}"),
            }
        }
        assert!(verify_batch(std::iter::empty()).is_empty());
    }

    #[test]
    fn verify_batch_of_one_block_checks_its_signature() {
        let (e, b) = signed(1, "/stocks/x", 1, vec![]);
        let one = verify_batch([(&b.cid, b.data.as_slice())]);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].as_ref().ok(), Some(&e));
        let mut forged = e.clone();
        forged.body = Ipld::Integer(7);
        let forged = forged.to_block().expect("block");
        let one = verify_batch([(&forged.cid, forged.data.as_slice())]);
        assert!(matches!(one[..], [Err(Error::BadSignature)]), "{one:?}");
    }

    #[test]
    fn verify_rejects_wrong_cid_and_codec() {
        let (_, b) = signed(1, "/stocks/x", 1, vec![]);
        let (_, other) = signed(1, "/stocks/x", 2, vec![]);
        assert!(matches!(verify(&other.cid, &b.data), Err(Error::BadHash)));
        let raw = cid_of(RAW, &b.data);
        assert!(matches!(
            verify(&raw, &b.data),
            Err(Error::BadCodec { found: RAW, .. })
        ));
    }

    #[test]
    fn verify_rejects_forged_signature_and_fields() {
        let (e, _) = signed(1, "/stocks/x", 1, vec![]);
        // Another author's key with this author's signature.
        let mut forged = e.clone();
        forged.author = keypair(2).public().encode_protobuf();
        let b = forged.to_block().expect("block");
        assert!(matches!(verify(&b.cid, &b.data), Err(Error::BadSignature)));
        // A changed body.
        let mut forged = e.clone();
        forged.body = Ipld::Integer(1);
        let b = forged.to_block().expect("block");
        assert!(matches!(verify(&b.cid, &b.data), Err(Error::BadSignature)));
        // A truncated signature.
        let mut forged = e.clone();
        forged.sig.truncate(63);
        let b = forged.to_block().expect("block");
        assert!(matches!(verify(&b.cid, &b.data), Err(Error::BadSignature)));
        // seq 0 and bad topics, even when correctly signed over.
        let k = keypair(1);
        for (topic, seq, want) in [
            ("/a", 0u64, "seq"),
            ("/a/*", 1, "topic"),
            ("nope", 1, "topic"),
        ] {
            let mut ev = e.clone();
            ev.topic = topic.into();
            ev.seq = seq;
            ev.sig = k.sign(&ev.signing_bytes().expect("bytes")).expect("sign");
            let b = ev.to_block().expect("block");
            let err = verify(&b.cid, &b.data).expect_err(topic);
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn verify_link_rules() {
        let (p1, b1) = signed(1, "/doc", 1, vec![]);
        let (c2, _) = signed(1, "/doc", 2, vec![b1.cid]);
        verify_link(&c2, &b1.cid, &p1).expect("chain");
        // Same author must step by exactly one.
        let (c3, _) = signed(1, "/doc", 3, vec![b1.cid]);
        let err = verify_link(&c3, &b1.cid, &p1).expect_err("gap");
        assert!(err.to_string().contains("seq 3"), "{err}");
        // Another writer may link any head, with its own seq.
        let (o, _) = signed(2, "/doc", 7, vec![b1.cid]);
        verify_link(&o, &b1.cid, &p1).expect("merge");
        // Topic must match.
        let (t, _) = signed(2, "/other", 1, vec![b1.cid]);
        assert!(matches!(verify_link(&t, &b1.cid, &p1), Err(Error::Link(_))));
        // The parent must actually be linked.
        let (n, _) = signed(1, "/doc", 2, vec![]);
        let err = verify_link(&n, &b1.cid, &p1).expect_err("unlinked");
        assert!(err.to_string().contains("prev"), "{err}");
        // seq overflow is an error, not a panic.
        let mut big = p1.clone();
        big.seq = u64::MAX;
        assert!(verify_link(&c2, &b1.cid, &big).is_err());
    }
}
