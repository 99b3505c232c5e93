//! A `--timings` file ([`EventTiming`] lines) read back as a timeline: each interval's publish
//! and delivery percentiles, by the time the events were published. A run's p99 can come from a
//! tail spread evenly over the run or from a few bursts; the timeline tells which, and when.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::harness::EventTiming;
use crate::stats::percentile;

/// The events of one run published within one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// The system measured.
    pub system: String,
    /// The scenario.
    pub scenario: String,
    /// The run (1-based).
    pub run: u32,
    /// Where the interval starts, in seconds after the run's first publish.
    pub from_s: f64,
    /// Events published in it.
    pub events: usize,
    /// Their deliveries (to every subscriber), µs after each publish call started: p50, p99
    /// and the largest. NaN when none arrived.
    pub delivery_us: [f64; 3],
    /// Their publish calls' durations, µs: p50 and p99.
    pub publish_us: [f64; 2],
}

/// Splits `lines` into intervals of `every_s` seconds of each run (1 s if `every_s` is not
/// positive), in the order of system, scenario, run and time. An interval in which nothing
/// was published is left out.
pub fn intervals(lines: &[EventTiming], every_s: f64) -> Vec<Interval> {
    let every_s = if every_s > 0.0 { every_s } else { 1.0 };
    type Key = (String, String, u32, u64);
    let mut groups: BTreeMap<Key, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for t in lines {
        let slot = (t.at_s.max(0.0) / every_s).floor() as u64;
        let (delivered, published) = groups
            .entry((t.system.clone(), t.scenario.clone(), t.run, slot))
            .or_default();
        delivered.extend(t.delivery_us.iter().flatten());
        published.push(t.publish_us);
    }
    groups
        .into_iter()
        .map(|((system, scenario, run, slot), (mut d, mut p))| {
            d.sort_by(f64::total_cmp);
            p.sort_by(f64::total_cmp);
            Interval {
                system,
                scenario,
                run,
                from_s: slot as f64 * every_s,
                events: p.len(),
                delivery_us: [
                    percentile(&d, 50.0),
                    percentile(&d, 99.0),
                    d.last().copied().unwrap_or(f64::NAN),
                ],
                publish_us: [percentile(&p, 50.0), percentile(&p, 99.0)],
            }
        })
        .collect()
}

/// Reads a `--timings` file: one [`EventTiming`] per line.
pub fn read(path: &std::path::Path) -> Result<Vec<EventTiming>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the timings file {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!("{} line {}: not an event's timings", path.display(), i + 1)
            })
        })
        .collect()
}

/// The intervals as a table, one line each, in ms.
pub fn render(intervals: &[Interval]) -> String {
    let ms = |us: f64| {
        if us.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}", us / 1000.0)
        }
    };
    let mut out = String::from(
        "system scenario run from_s events delivery_p50_ms delivery_p99_ms delivery_max_ms publish_p50_ms publish_p99_ms\n",
    );
    for i in intervals {
        out += &format!(
            "{} {} {} {:.2} {} {} {} {} {} {}\n",
            i.system,
            i.scenario,
            i.run,
            i.from_s,
            i.events,
            ms(i.delivery_us[0]),
            ms(i.delivery_us[1]),
            ms(i.delivery_us[2]),
            ms(i.publish_us[0]),
            ms(i.publish_us[1]),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(run: u32, id: u64, at_s: f64, publish_us: f64, delivery: Option<f64>) -> EventTiming {
        EventTiming {
            system: "tidings-3".into(),
            scenario: "latency".into(),
            run,
            id,
            at_s,
            publish_us,
            delivery_us: vec![delivery],
        }
    }

    #[test]
    fn each_run_is_split_by_the_time_its_events_were_published() {
        let mut lines = Vec::new();
        // Run 1: a quiet first quarter second (1 ms each), a burst in the second (the slow ones
        // 50 ms), and nothing in the third; run 2 in its first quarter only.
        for k in 0..100u64 {
            lines.push(timing(1, k, 0.0025 * k as f64, 800.0, Some(1_000.0)));
        }
        for k in 0..100u64 {
            let slow = k % 10 == 0;
            let d = if slow { 50_000.0 } else { 2_000.0 };
            lines.push(timing(1, 100 + k, 0.25 + 0.0025 * k as f64, 900.0, Some(d)));
        }
        lines.push(timing(1, 200, 0.8, 700.0, None));
        lines.push(timing(2, 0, 0.1, 600.0, Some(3_000.0)));
        let got = intervals(&lines, 0.25);
        let summary: Vec<(u32, f64, usize)> =
            got.iter().map(|i| (i.run, i.from_s, i.events)).collect();
        assert_eq!(
            summary,
            vec![(1, 0.0, 100), (1, 0.25, 100), (1, 0.75, 1), (2, 0.0, 1)]
        );
        assert_eq!(got[0].delivery_us, [1_000.0, 1_000.0, 1_000.0]);
        // The burst: its p50 is the common delivery, its p99 and largest the slow one.
        assert_eq!(got[1].delivery_us, [2_000.0, 50_000.0, 50_000.0]);
        assert_eq!(got[1].publish_us, [900.0, 900.0]);
        // Published, never delivered: counted, with no delivery figure.
        assert!(got[2].delivery_us.iter().all(|d| d.is_nan()));
        let table = render(&got);
        assert_eq!(table.lines().count(), 5, "{table}");
        assert!(
            table.contains("tidings-3 latency 1 0.25 100 2.0 50.0 50.0 0.9 0.9"),
            "{table}"
        );
        assert!(
            table.contains("tidings-3 latency 1 0.75 1 - - - 0.7 0.7"),
            "{table}"
        );
    }
}
