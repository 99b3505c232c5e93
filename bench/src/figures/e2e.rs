//! The `e2e` bench's figures: one harness record per (system, scenario).

use std::fmt::Write;

use anyhow::{Context, Result, bail};

use super::{RunInfo, machine_line, ms, provenance, thousands, times};
use crate::stats::Record;

/// The side-by-side table and the ratios the bench prints (and bench/README.md shows).
pub fn table(out: &[Record]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:<11} {:>6} {:>12} {:>12} {:>10} {:>10} {:>10} {:>5} {:>5}",
        "system",
        "scenario",
        "events",
        "delivered/s",
        "published/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "lost",
        "dup"
    );
    for o in out {
        let _ = writeln!(
            s,
            "{:<10} {:<11} {:>6} {:>12.0} {:>12.0} {:>10.0} {:>10.0} {:>10.0} {:>5} {:>5}",
            o.system,
            o.scenario,
            o.published,
            o.delivered_per_s,
            o.published_per_s,
            o.p50_us,
            o.p90_us,
            o.p99_us,
            o.lost,
            o.dup
        );
    }
    let find = |s: &str, sc: &str| out.iter().find(|o| o.system == s && o.scenario == sc);
    if let (Some(t), Some(g)) = (
        find("tidings", "throughput"),
        find("gossipsub", "throughput"),
    ) {
        let _ = writeln!(
            s,
            "\nthroughput tidings/gossipsub: {:.2}× delivered/s",
            t.delivered_per_s / g.delivered_per_s
        );
    }
    if let (Some(t), Some(g)) = (find("tidings", "latency"), find("gossipsub", "latency")) {
        let _ = writeln!(
            s,
            "latency tidings/gossipsub: p50 {:.1}×, p99 {:.1}×",
            t.p50_us / g.p50_us,
            t.p99_us / g.p99_us
        );
    }
    s
}

/// A results file's figures.
pub struct Figures {
    run: RunInfo,
    rows: Vec<Record>,
    file: String,
    /// tidings then gossipsub, throughput then latency.
    main: [Record; 4],
}

impl Figures {
    /// Refuses a file without the four measurements, or with one that failed.
    pub fn new(run: RunInfo, rows: Vec<Record>, file: &str) -> Result<Figures> {
        let find = |sys: &str, sc: &str| -> Result<Record> {
            let r = rows
                .iter()
                .find(|r| r.system == sys && r.scenario == sc)
                .with_context(|| format!("{file}: no {sys} {sc} line"))?;
            if let Some(e) = &r.error {
                bail!("{file}: {sys} {sc} failed: {e}");
            }
            Ok(r.clone())
        };
        let main = [
            find("tidings", "throughput")?,
            find("tidings", "latency")?,
            find("gossipsub", "throughput")?,
            find("gossipsub", "latency")?,
        ];
        Ok(Figures {
            run,
            rows,
            file: file.into(),
            main,
        })
    }

    /// The README bullet.
    pub fn headline(&self) -> String {
        let [tt, tl, gt, gl] = &self.main;
        let verdict = if tt.delivered_per_s < gt.delivered_per_s {
            format!(
                "tidings is **slower than gossipsub** ({} its delivered events/s)",
                times(tt.delivered_per_s / gt.delivered_per_s)
            )
        } else {
            format!(
                "tidings delivers **{} gossipsub's events/s**",
                times(tt.delivered_per_s / gt.delivered_per_s)
            )
        };
        let losses = |r: &[&Record]| -> String {
            let (l, d) = r.iter().fold((0, 0), |(l, d), x| (l + x.lost, d + x.dup));
            format!(
                "{} lost / {} duplicated",
                thousands(l as f64),
                thousands(d as f64)
            )
        };
        format!(
            "- End to end across 3 local nodes ([`bench/results/{f}`](bench/results/{f}), {p}): \
             {verdict}: {} vs {} delivered events/s from {} publishers, p50 / p99 latency {} / \
             {} vs {} / {} at {} events/s; tidings {}, gossipsub {}. tidings acknowledges only \
             after a majority of the rendezvous set has the event on disk; gossipsub keeps \
             nothing.\n",
            thousands(tt.delivered_per_s),
            thousands(gt.delivered_per_s),
            tt.lanes,
            ms(tl.p50_us),
            ms(tl.p99_us),
            ms(gl.p50_us),
            ms(gl.p99_us),
            thousands(tl.offered_rate.unwrap_or(f64::NAN)),
            losses(&[tt, tl]),
            losses(&[gt, gl]),
            f = self.file,
            p = provenance(&self.run),
        )
    }

    /// bench/README.md's example: the bench's table, regenerated from the file.
    pub fn page(&self) -> String {
        format!(
            "From [`results/{f}`](results/{f}) ({p}{m}):\n\n```\n{}```\n",
            table(&self.rows),
            f = self.file,
            p = provenance(&self.run),
            m = machine_line(&self.run),
        )
    }
}
