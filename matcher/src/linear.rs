//! The naive baseline: evaluate every filter on every event.

use serde_json::Value;

use crate::filter::Filter;
use crate::hash::FastMap;
use crate::topic::split_topic;
use crate::{Matcher, SubId};

/// Evaluates each filter's AST directly (the reference semantics for the differential tests).
#[derive(Debug, Default)]
pub struct LinearMatcher {
    subs: Vec<(SubId, Filter)>,
    pos: FastMap<SubId, usize>,
}

impl LinearMatcher {
    /// An empty matcher.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Matcher for LinearMatcher {
    fn insert(&mut self, id: SubId, filter: &Filter) {
        if let Some(&i) = self.pos.get(&id) {
            self.subs[i].1 = filter.clone();
            return;
        }
        self.pos.insert(id, self.subs.len());
        self.subs.push((id, filter.clone()));
    }

    fn remove(&mut self, id: SubId) -> bool {
        let Some(i) = self.pos.remove(&id) else {
            return false;
        };
        self.subs.swap_remove(i);
        if let Some((moved, _)) = self.subs.get(i) {
            self.pos.insert(*moved, i);
        }
        true
    }

    fn match_event(&self, topic: &str, body: &Value, out: &mut Vec<SubId>) {
        out.clear();
        let mut segs = Vec::with_capacity(8);
        if !split_topic(topic, &mut segs) {
            return;
        }
        for (id, f) in &self.subs {
            if f.topic().matches_segs(&segs) && f.condition().eval(body) {
                out.push(*id);
            }
        }
        out.sort_unstable();
    }

    fn len(&self) -> usize {
        self.subs.len()
    }
}
