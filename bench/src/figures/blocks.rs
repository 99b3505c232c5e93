//! The `blocks` bench's figures: one line with every rate and its baselines.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::{RunInfo, machine_line, provenance, thousands, times};

/// What one run measured (medians of `reps`): the line of the results file (and `--json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Always `blocks`.
    pub bench: String,
    pub events: usize,
    pub reps: usize,
    pub avg_body_json_bytes: f64,
    pub avg_block_bytes: f64,
    pub build_encode_hash_sign_events_per_s: f64,
    pub decode_verify_events_per_s: f64,
    pub decode_batch_verify_events_per_s: f64,
    pub decode_batch_verify_all_cores_events_per_s: f64,
    pub cores: usize,
    pub baseline_sha256_blocks_per_s: f64,
    pub baseline_sha256_mb_per_s: f64,
    /// ed25519 signing as the node signs (aws-lc-rs, `tidings_ipld_schema::Signer`).
    pub baseline_ed25519_sign_per_s: f64,
    /// The same signatures with ed25519-dalek (libp2p's key), which signed before; 0 in files
    /// older than the switch.
    #[serde(default)]
    pub baseline_ed25519_dalek_sign_per_s: f64,
    pub baseline_ed25519_verify_per_s: f64,
    /// The merged-key batch verification (`batch::verify_all`, what `verify_batch` uses) of the
    /// same signatures in the same batches, signatures only (no decoding); 0 in older files.
    #[serde(default)]
    pub batch_verify_signatures_per_s: f64,
    /// ed25519-dalek's batch verification of the same signatures in the same batches, signatures
    /// only (no decoding); 0 in files older than the merged-key batch.
    #[serde(default)]
    pub baseline_ed25519_dalek_batch_verify_per_s: f64,
    /// The curve arithmetic the signatures ran on (`batch::curve_backend`); empty in files
    /// older than the IFMA backend.
    #[serde(default)]
    pub curve_backend: String,
}

/// What the bench prints for `r` (and bench/README.md shows).
pub fn text(r: &Record) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tidings event blocks: {} seeded stock orders, body ≈{:.0} B JSON, block ≈{:.0} B; median of {} runs",
        r.events, r.avg_body_json_bytes, r.avg_block_bytes, r.reps
    );
    if !r.curve_backend.is_empty() {
        let _ = writeln!(s, "  ed25519 on {}", r.curve_backend);
    }
    let _ = writeln!(
        s,
        "  build+encode+hash+sign  {:>12.0} events/s   (baseline: ed25519 sign alone {:>10.0}/s; ed25519-dalek's {:.0}/s)",
        r.build_encode_hash_sign_events_per_s,
        r.baseline_ed25519_sign_per_s,
        r.baseline_ed25519_dalek_sign_per_s
    );
    let _ = writeln!(
        s,
        "  decode+verify           {:>12.0} events/s   (baseline: ed25519 verify alone {:>8.0}/s)",
        r.decode_verify_events_per_s, r.baseline_ed25519_verify_per_s
    );
    let _ = writeln!(
        s,
        "  decode+batch verify     {:>12.0} events/s   ({:.2}x single verify; on all {} cores {:.0}/s)",
        r.decode_batch_verify_events_per_s,
        r.decode_batch_verify_events_per_s / r.decode_verify_events_per_s,
        r.cores,
        r.decode_batch_verify_all_cores_events_per_s
    );
    if r.baseline_ed25519_dalek_batch_verify_per_s > 0.0 {
        let _ = writeln!(
            s,
            "  batch, signatures alone {:>12.0} sigs/s     ({:.2}x the baseline: ed25519-dalek's verify_batch on the same, {:.0}/s)",
            r.batch_verify_signatures_per_s,
            r.batch_verify_signatures_per_s / r.baseline_ed25519_dalek_batch_verify_per_s,
            r.baseline_ed25519_dalek_batch_verify_per_s
        );
    }
    let _ = writeln!(
        s,
        "  baseline raw SHA-256    {:>12.0} blocks/s   {:.1} MB/s over the same block bytes",
        r.baseline_sha256_blocks_per_s, r.baseline_sha256_mb_per_s
    );
    let _ = writeln!(
        s,
        "  share of the SHA-256 limit: build {:.1}%, verify {:.1}%; of the ed25519 floor: build {:.0}%, verify {:.0}%",
        100.0 * r.build_encode_hash_sign_events_per_s / r.baseline_sha256_blocks_per_s,
        100.0 * r.decode_verify_events_per_s / r.baseline_sha256_blocks_per_s,
        100.0 * r.build_encode_hash_sign_events_per_s / r.baseline_ed25519_sign_per_s,
        100.0 * r.decode_verify_events_per_s / r.baseline_ed25519_verify_per_s,
    );
    s
}

/// A results file's figures.
pub struct Figures {
    pub run: RunInfo,
    pub r: Record,
    pub file: String,
}

fn millions(v: f64) -> String {
    format!("{:.1} M", v / 1e6)
}

impl Figures {
    /// The README bullet.
    pub fn headline(&self) -> String {
        let r = &self.r;
        format!(
            "- Event blocks ([`bench/results/{f}`](bench/results/{f}), {p}): {} events/s built \
             and signed, {}/s decoded and verified one by one, {}/s verified in ed25519 batches \
             on one core ({}) and {}/s on {} cores; ed25519 is the floor (alone, in the same run: \
             {}/s signing, {}/s verifying; SHA-256 of the same bytes runs at {} blocks/s).\n",
            thousands(r.build_encode_hash_sign_events_per_s),
            thousands(r.decode_verify_events_per_s),
            thousands(r.decode_batch_verify_events_per_s),
            times(r.decode_batch_verify_events_per_s / r.decode_verify_events_per_s),
            thousands(r.decode_batch_verify_all_cores_events_per_s),
            r.cores,
            thousands(r.baseline_ed25519_sign_per_s),
            thousands(r.baseline_ed25519_verify_per_s),
            millions(r.baseline_sha256_blocks_per_s),
            f = self.file,
            p = provenance(&self.run),
        )
    }

    /// bench/README.md's example: the bench's output, regenerated from the file.
    pub fn page(&self) -> String {
        format!(
            "From [`results/{f}`](results/{f}) ({p}{m}):\n\n```\n{}```\n",
            text(&self.r),
            m = machine_line(&self.run),
            f = self.file,
            p = provenance(&self.run),
        )
    }
}
