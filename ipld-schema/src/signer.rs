//! The signing key of one author, prepared once for the many events it signs.
//!
//! Signatures are plain Ed25519 (RFC 8032), deterministic: the same key and bytes give the same
//! 64 bytes whichever library computes them. Signing goes through aws-lc-rs, whose Ed25519
//! signs in about half the time of ed25519-dalek's on x86-64 (9.3 µs vs 19–21 µs each here),
//! and a node signs every event it publishes on a request's task. Verification stays with
//! ed25519-dalek ([`crate::verify::verify`]), faster than aws-lc-rs at a single signature, and
//! its curve ([`crate::batch`]) for batches.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};

use crate::{Error, Keypair};

/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 author key ready to sign: the key pair expanded once, and the author field of
/// its events (the public key's libp2p protobuf encoding).
pub struct Signer {
    key: Ed25519KeyPair,
    author: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Signer")
            .field("public", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Prepares `keypair`, which must be ed25519 ([`Error::Signing`] otherwise).
    pub fn new(keypair: &Keypair) -> Result<Signer, Error> {
        let ed = keypair.clone().try_into_ed25519().map_err(|_| {
            Error::Signing(format!(
                "tidings events are signed with ed25519 keys, not {:?}",
                keypair.key_type()
            ))
        })?;
        let secret = ed.secret();
        let key =
            Ed25519KeyPair::from_seed_and_public_key(secret.as_ref(), &ed.public().to_bytes())
                .map_err(|e| Error::Signing(format!("ed25519 key rejected: {e}")))?;
        Ok(Signer {
            key,
            author: keypair.public().encode_protobuf(),
        })
    }

    /// The author field of the events this key signs.
    pub fn author(&self) -> &[u8] {
        &self.author
    }

    /// The Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig = self.key.sign(msg);
        debug_assert_eq!(sig.as_ref().len(), SIGNATURE_LEN);
        sig.as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::keypair;

    #[test]
    fn signs_exactly_as_the_libp2p_key_does() {
        for seed in [1u8, 7, 200] {
            let kp = keypair(seed);
            let signer = Signer::new(&kp).expect("ed25519");
            assert_eq!(signer.author(), kp.public().encode_protobuf().as_slice());
            for len in [0usize, 1, 64, 300, 4096] {
                let msg: Vec<u8> = (0..len).map(|i| (i * 31 + seed as usize) as u8).collect();
                let ours = signer.sign(&msg);
                assert_eq!(
                    ours,
                    kp.sign(&msg).expect("sign"),
                    "seed {seed}, {len} bytes"
                );
                assert!(kp.public().verify(&msg, &ours));
            }
        }
    }
}
