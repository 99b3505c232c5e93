//! The `matcher` bench's figures: one line per (workload, size, engine).

use std::fmt::Write;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{RunInfo, machine_line, provenance, thousands, times};

/// One engine on one workload at one size: a line of the results file (and of `--json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// Always `matcher`.
    pub bench: String,
    pub workload: String,
    pub subscriptions: usize,
    pub engine: String,
    pub events_per_sec: f64,
    /// Events matched in the time budget (all of them, or a sample for the slow engines).
    pub events_timed: usize,
    pub matches_per_event: f64,
    pub build_secs: f64,
    pub bytes_per_sub: f64,
    /// Whether this engine returned the same ids as the first engine on every sample event.
    pub agrees: bool,
}

/// A results file's figures.
pub struct Figures<'a> {
    run: &'a RunInfo,
    rows: &'a [Row],
    file: &'a str,
}

fn size(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => thousands(n as f64),
    }
}

impl<'a> Figures<'a> {
    /// Refuses a run in which the engines disagreed (its speeds would mean nothing).
    pub fn new(run: &'a RunInfo, rows: &'a [Row], file: &'a str) -> Result<Figures<'a>> {
        if let Some(r) = rows.iter().find(|r| !r.agrees) {
            bail!(
                "{file}: {} disagreed with the first engine on {} at {}",
                r.engine,
                r.workload,
                r.subscriptions
            );
        }
        Ok(Figures { run, rows, file })
    }

    fn eps(&self, workload: &str, n: usize, engine: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && r.subscriptions == n && r.engine == engine)
            .map(|r| r.events_per_sec)
    }

    /// The README bullet: the tree at `stock`/100k beside a-tree and the linear scan.
    pub fn headline(&self) -> Result<String> {
        let (Some(pst), Some(at), Some(lin)) = (
            self.eps("stock", 100_000, "pst"),
            self.eps("stock", 100_000, "a-tree"),
            self.eps("stock", 100_000, "linear"),
        ) else {
            bail!(
                "{}: no pst, a-tree and linear rows for stock at 100k subscriptions (run \
                 `matcher --quick`)",
                self.file
            );
        };
        let counting = self
            .eps("stock", 100_000, "counting")
            .map(|c| format!(", {} the counting algorithm", times(pst / c)))
            .unwrap_or_default();
        Ok(format!(
            "- Matching, `stock` workload at 100k subscriptions \
             ([`bench/results/{f}`](bench/results/{f}), {p}): the parallel search tree matches \
             {} events/s: {} the independent `a-tree` crate{counting} and {} a linear scan, \
             same run, every engine returning the same matches.\n",
            thousands(pst),
            times(pst / at),
            times(pst / lin),
            f = self.file,
            p = provenance(self.run),
        ))
    }

    /// bench/README.md's table: every row of the run, and the tree's ratios per workload and size.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "From [`results/{f}`](results/{f}) ({p}{m}):\n",
            m = machine_line(self.run),
            f = self.file,
            p = provenance(self.run),
        );
        let _ = writeln!(
            s,
            "| workload | subs | engine | events/s | events timed | matches/event | build s | bytes/sub |"
        );
        let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|");
        for r in self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.1} | {:.2} | {} |",
                r.workload,
                size(r.subscriptions),
                r.engine,
                thousands(r.events_per_sec),
                thousands(r.events_timed as f64),
                r.matches_per_event,
                r.build_secs,
                thousands(r.bytes_per_sub)
            );
        }
        s.push('\n');
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for r in self.rows {
            if !seen.contains(&(r.workload.as_str(), r.subscriptions)) {
                seen.push((r.workload.as_str(), r.subscriptions));
            }
        }
        for (w, n) in seen {
            let Some(pst) = self.eps(w, n, "pst") else {
                continue;
            };
            let others: Vec<String> = ["a-tree", "counting", "linear"]
                .iter()
                .filter_map(|e| self.eps(w, n, e).map(|x| format!("{} {e}", times(pst / x))))
                .collect();
            if !others.is_empty() {
                let _ = writeln!(
                    s,
                    "- {w} at {}: the tree is {}.",
                    size(n),
                    others.join(", ")
                );
            }
        }
        s.push_str("- every engine returned the same ids on every sample event.\n");
        s
    }
}
