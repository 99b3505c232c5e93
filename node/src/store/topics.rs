//! The topics a store holds, a page at a time, for `GET /v1/topics` and the console.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;
use tidings_ipld_schema::Event;

use super::tables::{HEADS, SEQS};
use super::{Store, StoreError, db, parse_cid};

/// One topic held by this store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    /// The topic.
    pub topic: String,
    /// Its current heads (events no stored event links to), sorted.
    pub heads: Vec<String>,
    /// Authors that have written to it.
    pub authors: u64,
    /// Events written to it: the sum over its authors of the highest `seq` stored (each
    /// author's chain numbers its events 1, 2, ...), so a node holding only the newest part
    /// of a stream still counts the whole stream.
    pub events: u64,
    /// The newest `time` (ms since the Unix epoch) among its heads.
    pub last_time: u64,
}

impl Store {
    /// Up to `limit` topics in name order, starting after `after`, and whether more follow.
    pub fn topics(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TopicSummary>, bool), StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let heads = txn.open_multimap_table(HEADS).map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: BTreeMap<String, TopicSummary> = BTreeMap::new();
        let mut more = false;
        for item in heads.range::<&str>((start, Bound::Unbounded)).map_err(db)? {
            let (k, values) = item.map_err(db)?;
            if page.len() >= limit {
                more = true;
                break;
            }
            let topic = k.value().to_string();
            let mut summary = TopicSummary {
                topic: topic.clone(),
                heads: Vec::new(),
                authors: 0,
                events: 0,
                last_time: 0,
            };
            let mut cids = Vec::new();
            for v in values {
                cids.push(parse_cid(v.map_err(db)?.value())?);
            }
            cids.sort();
            for cid in &cids {
                let time = blocks
                    .get(cid.to_bytes().as_slice())?
                    .and_then(|g| Event::decode_stored(g.value()))
                    .map_or(0, |e| e.time);
                summary.last_time = summary.last_time.max(time);
            }
            summary.heads = cids.iter().map(|c| c.to_string()).collect();
            page.insert(topic, summary);
        }
        if !page.is_empty() {
            // SEQS is keyed by (author, topic): one pass counts the page's authors and events.
            let seqs = txn.open_table(SEQS).map_err(db)?;
            for item in seqs.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                if let Some(s) = page.get_mut(k.value().1) {
                    s.authors += 1;
                    s.events += v.value().0;
                }
            }
        }
        Ok((page.into_values().collect(), more))
    }
}
