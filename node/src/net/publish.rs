//! `/tidings/publish/2`: an author's node hands signed event blocks to the rendezvous primary,
//! which stores each, replicates it to a majority of the set, and answers for each.
//!
//! Version 1 carried one event per request: at a few thousand events a second that was a
//! substream, a timer and a task on both sides per event, and an author publishing faster than
//! the primary's per-peer request limit was refused. Version 2 carries what the author's node
//! has queued for the primary (see [`crate::pubsub::publishes`]); a lone event still goes at once.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name (request-response: one request per substream).
pub const PROTOCOL: &str = "/tidings/publish/2";
/// The same messages on one long-lived stream per peer ([`super::stream_rpc`]).
pub const STREAM_PROTOCOL: &str = "/tidings/publish/3";

/// Signed events to store, replicate, match and deliver, in the order the author's node queued
/// them: (CID bytes, DAG-CBOR event block).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The events' (CID bytes, block bytes).
    pub blocks: Vec<(ByteBuf, ByteBuf)>,
}

/// The primary's answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PublishResponse {
    /// One answer per event of the request, in its order.
    Each(Vec<PublishAnswer>),
    /// The whole request was refused (the sender is over its rate limit or penalised, the
    /// request is malformed, or one of its blocks is forged): nothing of it was stored.
    Refused {
        /// HTTP status the publisher should report (400 bad event, 503 try elsewhere).
        status: u16,
        /// Why.
        message: String,
    },
}

/// The primary's answer for one event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PublishAnswer {
    /// Durable on `copies` members of the set (a majority); the topic's heads after it.
    Stored {
        /// Members holding the event durably, the primary included.
        copies: u32,
        /// CID bytes of the topic's heads.
        heads: Vec<ByteBuf>,
    },
    /// Refused: `status` is the HTTP status the publisher should report (400 bad event, 503 no
    /// majority reachable).
    Refused {
        /// HTTP status to report.
        status: u16,
        /// Why.
        message: String,
    },
}

impl PublishResponse {
    /// The whole request refused before it was read as events (the sender penalised or over
    /// its rate limit, or the request malformed): 503, the publisher may try elsewhere.
    pub fn refused(message: String) -> PublishResponse {
        PublishResponse::Refused {
            status: 503,
            message,
        }
    }

    /// The answer for each of `n` events: a whole refusal is every event's, and an answer of
    /// the wrong length (a broken primary) is refused for each, so nothing counts as stored
    /// that was not answered as such.
    pub fn into_answers(self, n: usize) -> Vec<PublishAnswer> {
        match self {
            PublishResponse::Each(answers) if answers.len() == n => answers,
            PublishResponse::Each(answers) => {
                let message = format!("the primary answered {} of {n} events", answers.len());
                vec![
                    PublishAnswer::Refused {
                        status: 503,
                        message
                    };
                    n
                ]
            }
            PublishResponse::Refused { status, message } => {
                vec![PublishAnswer::Refused { status, message }; n]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(copies: u32) -> PublishAnswer {
        PublishAnswer::Stored {
            copies,
            heads: vec![],
        }
    }

    #[test]
    fn answers_go_to_their_events_and_a_short_answer_stores_nothing() {
        let each = PublishResponse::Each(vec![stored(2), stored(3)]).into_answers(2);
        assert!(matches!(
            each[..],
            [
                PublishAnswer::Stored { copies: 2, .. },
                PublishAnswer::Stored { copies: 3, .. }
            ]
        ));
        let short = PublishResponse::Each(vec![stored(2)]).into_answers(3);
        assert_eq!(short.len(), 3);
        assert!(
            short
                .iter()
                .all(|a| matches!(a, PublishAnswer::Refused { status: 503, .. }))
        );
        let whole = PublishResponse::Refused {
            status: 400,
            message: "forged".into(),
        }
        .into_answers(2);
        assert!(
            whole
                .iter()
                .all(|a| matches!(a, PublishAnswer::Refused { status: 400, .. }))
        );
    }
}
