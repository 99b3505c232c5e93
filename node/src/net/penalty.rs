//! Peers serving a penalty for misbehaving (bad blocks, undecodable or oversized messages,
//! floods): shared by the swarm task, which refuses their connections and requests, and the
//! rest of the node, which finds the misbehaviour and stops asking them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a peer that misbehaved is neither asked nor served.
pub const PENALTY: Duration = Duration::from_secs(600);

/// Penalised peers and when their penalty ends; cheap to clone (one shared table).
#[derive(Debug, Clone, Default)]
pub struct Penalties {
    until: Arc<Mutex<HashMap<PeerId, Instant>>>,
}

impl Penalties {
    /// Penalises `peer` for [`PENALTY`] and logs why at warn, once per penalty (a peer that keeps
    /// misbehaving while penalised is logged at debug, so it cannot flood the log). Returns
    /// whether the penalty is new. The caller disconnects the peer.
    pub fn penalise(&self, peer: PeerId, why: &str) -> bool {
        let now = Instant::now();
        let new = match self.until.lock() {
            Ok(mut p) => p.insert(peer, now + PENALTY).is_none_or(|t| t <= now),
            Err(_) => true,
        };
        if new {
            tracing::warn!(%peer, reason = %why, "peer misbehaved: disconnecting it and refusing it for {}s", PENALTY.as_secs());
        } else {
            tracing::debug!(%peer, reason = %why, "penalised peer misbehaved again");
        }
        new
    }

    /// Whether `peer` is serving a penalty.
    pub fn is_penalised(&self, peer: &PeerId) -> bool {
        let Ok(mut p) = self.until.lock() else {
            return false;
        };
        match p.get(peer) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                p.remove(peer);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_penalty_is_new_once_and_sticks() {
        let p = Penalties::default();
        let peer = PeerId::random();
        assert!(!p.is_penalised(&peer));
        assert!(p.penalise(peer, "bad block"));
        assert!(!p.penalise(peer, "bad block again"));
        assert!(p.is_penalised(&peer));
        assert!(p.clone().is_penalised(&peer), "clones share the table");
        assert!(!p.is_penalised(&PeerId::random()));
    }
}
