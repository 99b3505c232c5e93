//! The `backfill` bench's figures: one line per fetch mode.

use std::fmt::Write;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{RunInfo, machine_line, provenance, thousands, times};

/// The one-request fetch, the baseline (one request per block) and the fetch that stores.
pub const STREAM: &str = "stream, verify";
pub const PER_BLOCK: &str = "per-block, verify";
pub const STORED: &str = "stream, verify+store";

/// The backfill rate the design aims at, blocks/s.
const GOAL: f64 = 100_000.0;

/// One fetch mode's median run: a line of the results file (and of `--json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// Always `backfill`.
    pub bench: String,
    pub mode: String,
    /// Events in the stream.
    pub events: u64,
    pub avg_block_bytes: f64,
    /// Blocks this mode fetched (the per-block baseline fetches only the newest part).
    pub blocks: u64,
    pub seconds: f64,
    pub blocks_per_s: f64,
    pub mb_per_s: f64,
    /// Runs the figure is the median of.
    pub reps: usize,
}

/// The table the bench prints for `rows` (and bench/README.md shows).
pub fn text(rows: &[Row]) -> String {
    let mut s = String::new();
    if let Some(r) = rows.first() {
        let _ = writeln!(
            s,
            "backfill: {} events of ~{:.0} bytes, one peer over loopback; median of {} runs\n",
            r.events, r.avg_block_bytes, r.reps
        );
    }
    let _ = writeln!(s, "| mode | blocks | seconds | verified blocks/s | MB/s |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.0} | {:.1} |",
            r.mode, r.blocks, r.seconds, r.blocks_per_s, r.mb_per_s
        );
    }
    let find = |m: &str| rows.iter().find(|r| r.mode == m);
    if let (Some(st), Some(pb)) = (find(STREAM), find(PER_BLOCK)) {
        let _ = writeln!(
            s,
            "\nstream vs per-block: {:.1}× ({} per-block blocks, the {} newest)",
            st.blocks_per_s / pb.blocks_per_s,
            pb.blocks,
            pb.blocks
        );
    }
    s
}

/// A results file's figures.
pub struct Figures {
    run: RunInfo,
    rows: Vec<Row>,
    file: String,
}

impl Figures {
    pub fn new(run: RunInfo, rows: Vec<Row>, file: &str) -> Result<Figures> {
        for m in [STREAM, PER_BLOCK, STORED] {
            rows.iter()
                .find(|r| r.mode == m)
                .with_context(|| format!("{file}: no {m:?} line"))?;
        }
        Ok(Figures {
            run,
            rows,
            file: file.into(),
        })
    }

    fn rate(&self, mode: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.mode == mode)
            .map_or(f64::NAN, |r| r.blocks_per_s)
    }

    /// The README bullet; `blocks` gives the verification ceiling on the same machine.
    pub fn headline(&self, blocks: &super::blocks::Figures) -> String {
        let (st, pb, stored) = (self.rate(STREAM), self.rate(PER_BLOCK), self.rate(STORED));
        let events = self.rows.first().map_or(0, |r| r.events);
        let reps = self.rows.first().map_or(0, |r| r.reps);
        let ceiling = blocks.r.decode_batch_verify_all_cores_events_per_s;
        let goal = if st >= GOAL {
            " The 100k/s goal is reached.".to_string()
        } else if ceiling < GOAL {
            format!(
                " Short of the 100k/s goal: verification alone ran at {} blocks/s on {} cores in \
                 the `blocks` run above, and here the same cores also run the node that sends \
                 the blocks.",
                thousands(ceiling),
                blocks.r.cores
            )
        } else {
            " Short of the 100k/s goal.".to_string()
        };
        format!(
            "- History backfill of a {}-event stream from one peer \
             ([`bench/results/{f}`](bench/results/{f}), {p}): {} blocks/s fetched and verified \
             (CID and ed25519 signature each, in batches on every core) in one request, vs {}/s \
             one request per block over the same connection ({}), medians of {reps}; {}/s with \
             storing.{goal}\n",
            thousands(events as f64),
            thousands(st),
            thousands(pb),
            times(st / pb),
            thousands(stored),
            f = self.file,
            p = provenance(&self.run),
        )
    }

    /// bench/README.md's table: the bench's output, regenerated from the file.
    pub fn page(&self) -> String {
        format!(
            "From [`results/{f}`](results/{f}) ({p}{m}):\n\n{}",
            text(&self.rows),
            f = self.file,
            p = provenance(&self.run),
            m = machine_line(&self.run),
        )
    }
}
