//! A test-only connection gate for partition tests: with `TIDINGS_TEST_PARTITION_FILE` set, the
//! node re-reads that file a few times a second and refuses every connection (inbound and
//! outbound, closing open ones) to the peer ids listed in it, one per line. The cut is real for
//! the node: nothing reaches or leaves it on those connections.
//!
//! Only a build with the `test-faults` feature (which the tests enable) has it: in any other
//! build the gate cannot exist, and the variable is not even read.

#[cfg(feature = "test-faults")]
pub(super) use enabled::Gate;

#[cfg(not(feature = "test-faults"))]
pub(super) use disabled::Gate;

#[cfg(feature = "test-faults")]
mod enabled {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use libp2p::PeerId;
    use libp2p::allow_block_list::{Behaviour as BlockList, BlockedPeers};

    /// Environment variable naming the gate file.
    const ENV: &str = "TIDINGS_TEST_PARTITION_FILE";

    /// The gate file and the peers currently blocked through it.
    pub(in crate::net) struct Gate {
        path: PathBuf,
        blocked: HashSet<PeerId>,
        last: Option<String>,
    }

    impl Gate {
        /// The gate named by [`ENV`], if set.
        pub(in crate::net) fn from_env() -> Option<Gate> {
            let path = std::env::var_os(ENV)?;
            tracing::warn!(file = %PathBuf::from(&path).display(), "test-only partition gate is on");
            Some(Gate {
                path: PathBuf::from(path),
                blocked: HashSet::new(),
                last: None,
            })
        }

        /// Re-reads the file and brings `list` in line with it. A missing file blocks nobody.
        pub(in crate::net) fn apply(&mut self, list: &mut BlockList<BlockedPeers>) {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            if self.last.as_deref() == Some(text.as_str()) {
                return;
            }
            let want: HashSet<PeerId> =
                text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            for peer in self.blocked.difference(&want) {
                list.unblock_peer(*peer);
                tracing::info!(%peer, "partition gate: peer reachable again");
            }
            for peer in want.difference(&self.blocked) {
                list.block_peer(*peer);
                tracing::info!(%peer, "partition gate: peer cut off");
            }
            self.blocked = want;
            self.last = Some(text);
        }
    }
}

#[cfg(not(feature = "test-faults"))]
mod disabled {
    use libp2p::allow_block_list::{Behaviour as BlockList, BlockedPeers};

    /// No gate can exist in this build: the type has no values.
    pub(in crate::net) enum Gate {}

    impl Gate {
        /// Always `None`: the environment is not read.
        pub(in crate::net) fn from_env() -> Option<Gate> {
            None
        }

        /// Unreachable: there is no gate to apply.
        pub(in crate::net) fn apply(&mut self, _list: &mut BlockList<BlockedPeers>) {
            match *self {}
        }
    }
}
