//! The messages of `/tidings/{publish,replicate,subscribe,deliver,history}/1` as a remote peer's bytes
//! reach the node: decoded by the swarm's own codec (`tidings_node::net::wire::decode`), then
//! the checks the node applies before acting on them (CIDs parsed, blocks verified, filters
//! parsed); and `/tidings/fetch/1` streams (a request; an answer of block frames and an end
//! frame) read with `tidings_node::net::fetch`. The first input byte picks the message kind
//! (the request-response kinds of `Kind::ALL`, then fetch request, then fetch answer); the rest is the
//! stream's content. Checks, beyond "never panics": whatever decodes re-encodes and decodes to
//! the same bytes.
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use tidings_ipld_schema::{Cid, verify};
use tidings_matcher::Filter;
use tidings_node::net::fetch::{self, Frame};
use tidings_node::net::history::{HistoryRequest, HistoryResponse};
use tidings_node::net::publish::{PublishAnswer, PublishResponse};
use tidings_node::net::subscribe::SubscribeRequest;
use tidings_node::net::wire::{Kind, Message, decode, encode};

fn check_block(cid: &[u8], block: &[u8]) {
    if let Ok(cid) = Cid::try_from(cid) {
        let _ = verify(&cid, block);
    }
}

/// A fetch request stream, or an answer stream read frame by frame as the fetcher does.
fn fetch_stream(request: bool, bytes: &[u8]) {
    let mut io = futures::io::Cursor::new(bytes);
    if request {
        if let Ok(req) = block_on(fetch::read_request(&mut io)) {
            let again = fetch::encode_request(&req).expect("a decoded request encodes");
            let back = fetch::decode_request(&again[4..]).expect("an encoded request decodes");
            assert_eq!(back, req);
            for c in req.want.iter().chain(&req.have) {
                let _ = Cid::try_from(c.as_slice());
            }
        }
        return;
    }
    let mut buf = Vec::new();
    while let Ok(frame) = block_on(fetch::read_frame(&mut io, &mut buf)) {
        match frame {
            Frame::Block(cid, data) => {
                let _ = verify(&cid, &data);
            }
            Frame::End(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let pick = usize::from(first) % (Kind::ALL.len() + 2);
    if pick >= Kind::ALL.len() {
        return fetch_stream(pick == Kind::ALL.len(), bytes);
    }
    let kind = Kind::ALL[pick];
    let Ok(msg) = decode(kind, bytes) else {
        return;
    };
    assert_eq!(msg.kind(), kind);
    let once = encode(msg.clone()).expect("a decoded message encodes");
    let twice = encode(decode(kind, &once).expect("an encoded message decodes")).expect("encodes");
    assert_eq!(once, twice, "{kind:?} does not round-trip");
    match msg {
        Message::PublishRequest(r) => r.blocks.iter().for_each(|(c, b)| check_block(c, b)),
        Message::ReplicateRequest(r) => r.blocks.iter().for_each(|(c, b)| check_block(c, b)),
        Message::DeliverRequest(r) => r.events.iter().for_each(|(c, b)| check_block(c, b)),
        Message::PublishResponse(PublishResponse::Each(answers)) => {
            for a in answers {
                if let PublishAnswer::Stored { heads, .. } = a {
                    heads.iter().for_each(|h| {
                        let _ = Cid::try_from(h.as_slice());
                    })
                }
            }
        }
        Message::SubscribeRequest(SubscribeRequest::Lease { filter, .. })
        | Message::HistoryRequest(
            HistoryRequest::DurableOpen { filter, .. } | HistoryRequest::Query { filter, .. },
        ) => {
            let _ = Filter::parse(&filter);
        }
        Message::HistoryResponse(HistoryResponse::Page { events, .. }) => {
            events.iter().for_each(|(c, b)| check_block(c, b))
        }
        _ => {}
    }
});
