//! Ed25519 batch verification with each signer's key term merged.
//!
//! The batch equation (the one ed25519-dalek's `verify_batch` checks) is
//! `[-Σ zᵢsᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ = 0` with random 128-bit `zᵢ` and `kᵢ = H(Rᵢ‖Aᵢ‖Mᵢ)`.
//! Blocks that arrive together (a backfill, a replica batch, a delivery) are nearly all from
//! one author, so the `Aᵢ` are one point: `Σ [zᵢkᵢ]A = [Σ zᵢkᵢ]A`. Summing the scalars per key
//! first leaves one point per signature (its `R`) instead of two, and drops the 253-bit
//! scalars, which cost twice the 128-bit ones in the multiscalar multiplication: about 1.5× the
//! signatures per second of ed25519-dalek's batch on the same blocks (the `blocks` bench
//! reports both). The equation is the same one, so the same batches pass.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};
use std::collections::HashMap;

/// Domain separation of the hash that derives the batch's `zᵢ`.
const Z_LABEL: &[u8] = b"tidings ed25519 batch z v1";

/// The curve arithmetic ed25519 runs on in this process: `"AVX-512 IFMA"`, `"AVX2"` or
/// `"portable"`. curve25519-dalek chooses at run time among the backends it was built with; the
/// workspace's `.cargo/config.toml` builds the IFMA one into x86-64 binaries (1.3-1.8x the
/// verifications per second of AVX2 on a CPU that has it).
pub fn curve_backend() -> &'static str {
    #[cfg(all(target_arch = "x86_64", curve25519_dalek_backend = "avx512"))]
    if ifma_cpu() {
        return "AVX-512 IFMA";
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return "AVX2";
    }
    "portable"
}

/// Whether this CPU has what curve25519-dalek's IFMA backend needs (its own run-time check).
#[cfg(target_arch = "x86_64")]
fn ifma_cpu() -> bool {
    std::arch::is_x86_feature_detected!("avx512ifma")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// One signature to check: the signed message, the signature and its signer's key.
pub struct Item<'a> {
    /// The signed bytes.
    pub msg: &'a [u8],
    /// The signature over `msg`.
    pub sig: Signature,
    /// The signer's key.
    pub key: VerifyingKey,
}

/// True when every signature of `items` is valid (true for none). False names no culprit: the
/// caller checks each one on its own to find which (as [`crate::verify_batch`] does).
///
/// The `zᵢ` are derived from a hash of every `kᵢ` (which commits to `Rᵢ`, `Aᵢ` and `Mᵢ`) and
/// every `sᵢ`, as ed25519-dalek derives them: a sender cannot choose signatures that cancel in
/// the sum without knowing the `zᵢ`, and cannot know them before fixing every signature.
pub fn verify_all(items: &[Item<'_>]) -> bool {
    let mut seed = Sha512::new();
    seed.update(Z_LABEL);
    seed.update((items.len() as u64).to_le_bytes());
    let mut ks = Vec::with_capacity(items.len());
    for item in items {
        let mut h = Sha512::new();
        h.update(item.sig.r_bytes());
        h.update(item.key.as_bytes());
        h.update(item.msg);
        let k: [u8; 64] = h.finalize().into();
        seed.update(k);
        seed.update(item.sig.s_bytes());
        ks.push(Scalar::from_bytes_mod_order_wide(&k));
    }
    let seed: [u8; 64] = seed.finalize().into();

    // One scalar per distinct key (`Σ zᵢkᵢ` over its signatures). Blocks come in runs of one
    // author, so the last key is checked first; the map keeps a batch of many authors (a
    // hostile sender's, say) linear.
    let mut keys: Vec<(VerifyingKey, Scalar)> = Vec::new();
    let mut index: HashMap<[u8; 32], usize> = HashMap::new();
    let mut last: Option<usize> = None;
    let mut scalars = Vec::with_capacity(items.len() + 2);
    let mut points = Vec::with_capacity(items.len() + 2);
    let mut b_coefficient = Scalar::ZERO;
    let mut zs = [0u8; 64];
    for (i, (item, k)) in items.iter().zip(&ks).enumerate() {
        // Four 128-bit z per hash of (seed, block of four).
        if i % 4 == 0 {
            let mut h = Sha512::new();
            h.update(seed);
            h.update(((i / 4) as u64).to_le_bytes());
            zs = h.finalize().into();
        }
        let at = (i % 4) * 16;
        let mut z = [0u8; 16];
        z.copy_from_slice(&zs[at..at + 16]);
        let z = Scalar::from(u128::from_le_bytes(z));
        // A non-canonical s is refused, as ed25519-dalek refuses it.
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*item.sig.s_bytes()))
        else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(*item.sig.r_bytes()).decompress() else {
            return false;
        };
        b_coefficient += z * s;
        let zk = z * k;
        let at = match last.filter(|&j| keys[j].0 == item.key) {
            Some(j) => j,
            None => *index.entry(*item.key.as_bytes()).or_insert_with(|| {
                keys.push((item.key, Scalar::ZERO));
                keys.len() - 1
            }),
        };
        keys[at].1 += zk;
        last = Some(at);
        scalars.push(z);
        points.push(r);
    }
    scalars.push(-b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    for (key, sum) in keys {
        scalars.push(sum);
        points.push(key.to_edwards());
    }
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// The IFMA backend is built in on x86-64 (`.cargo/config.toml`): without it a CPU that has
    /// IFMA verifies at the AVX2 rate, silently. A RUSTFLAGS variable replaces the setting.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x86_64_builds_carry_the_ifma_backend() {
        let built_in = cfg!(curve25519_dalek_backend = "avx512");
        assert!(
            built_in,
            "built without curve25519_dalek_backend=\"avx512\": was .cargo/config.toml ignored \
             (a RUSTFLAGS variable replaces it)?"
        );
        assert_eq!(
            curve_backend() == "AVX-512 IFMA",
            ifma_cpu(),
            "{}",
            curve_backend()
        );
    }

    /// `n` messages signed by `authors` keys in turn.
    fn batch(n: usize, authors: u8) -> (Vec<Vec<u8>>, Vec<Signature>, Vec<VerifyingKey>) {
        let signers: Vec<SigningKey> = (0..authors)
            .map(|a| SigningKey::from_bytes(&[a + 1; 32]))
            .collect();
        let mut msgs = Vec::new();
        let mut sigs = Vec::new();
        let mut keys = Vec::new();
        for i in 0..n {
            let signer = &signers[i % signers.len()];
            let msg = format!("message {i}").into_bytes();
            sigs.push(signer.sign(&msg));
            keys.push(signer.verifying_key());
            msgs.push(msg);
        }
        (msgs, sigs, keys)
    }

    fn items<'a>(msgs: &'a [Vec<u8>], sigs: &[Signature], keys: &[VerifyingKey]) -> Vec<Item<'a>> {
        msgs.iter()
            .zip(sigs)
            .zip(keys)
            .map(|((msg, sig), key)| Item {
                msg,
                sig: *sig,
                key: *key,
            })
            .collect()
    }

    /// Both batch verifiers, which must agree.
    fn both(msgs: &[Vec<u8>], sigs: &[Signature], keys: &[VerifyingKey]) -> bool {
        let ours = verify_all(&items(msgs, sigs, keys));
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        let dalek = ed25519_dalek::verify_batch(&refs, sigs, keys).is_ok();
        assert_eq!(ours, dalek, "the merged batch and ed25519-dalek's disagree");
        ours
    }

    #[test]
    fn good_batches_pass_with_one_or_many_authors() {
        assert!(verify_all(&[]));
        for (n, authors) in [
            (1, 1),
            (2, 1),
            (5, 1),
            (64, 1),
            (64, 2),
            (33, 7),
            (40, 40),
            (300, 150),
        ] {
            let (msgs, sigs, keys) = batch(n, authors);
            assert!(both(&msgs, &sigs, &keys), "n={n} authors={authors}");
        }
    }

    #[test]
    fn one_bad_signature_fails_the_batch() {
        for (n, authors) in [(1, 1), (9, 1), (64, 1), (64, 3), (300, 150)] {
            let (msgs, sigs, keys) = batch(n, authors);
            for at in [0, n / 2, n - 1] {
                // A flipped bit in R, in s, in the message; another author's key.
                for byte in [3usize, 40] {
                    let mut bad = sigs.clone();
                    let mut bytes = bad[at].to_bytes();
                    bytes[byte] ^= 0x10;
                    bad[at] = Signature::from_bytes(&bytes);
                    assert!(!both(&msgs, &bad, &keys), "n={n} at={at} byte={byte}");
                }
                let mut msgs2 = msgs.clone();
                msgs2[at].push(0);
                assert!(!both(&msgs2, &sigs, &keys), "n={n} at={at} message");
                let mut keys2 = keys.clone();
                keys2[at] = SigningKey::from_bytes(&[99; 32]).verifying_key();
                assert!(!both(&msgs, &sigs, &keys2), "n={n} at={at} key");
            }
        }
    }

    #[test]
    fn swapped_signatures_and_non_canonical_s_fail() {
        let (msgs, mut sigs, keys) = batch(8, 1);
        sigs.swap(2, 5);
        assert!(!both(&msgs, &sigs, &keys));
        // s + l: the same point equation, but a non-canonical encoding.
        let (msgs, mut sigs, keys) = batch(4, 1);
        let mut bytes = sigs[1].to_bytes();
        let s = Scalar::from_canonical_bytes(*sigs[1].s_bytes()).expect("canonical");
        let l = Scalar::ZERO - Scalar::ONE; // l - 1
        // (s + l) as an integer: s + (l - 1) + 1, carried by hand over the 32 bytes.
        let mut carry = 1u16;
        let (sb, lb) = (s.to_bytes(), l.to_bytes());
        for j in 0..32 {
            let v = sb[j] as u16 + lb[j] as u16 + carry;
            bytes[32 + j] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0, "s + l fits 256 bits");
        sigs[1] = Signature::from_bytes(&bytes);
        assert!(!both(&msgs, &sigs, &keys));
    }
}
