//! The figures of the `matcher`, `blocks`, `backfill` and `e2e` benches in README.md and
//! bench/README.md, generated from the results files those benches save in `bench/results/`
//! (`<bench>-<date>-<time>.jsonl`: a run line, then one line per measurement), so that no figure
//! is copied by hand (copied ones drifted from their runs). Each bench saves its file and
//! rewrites its sections; `cargo run -p tidings-bench --bin figures` rewrites them all from the
//! newest file of each bench, and a test checks the committed READMEs against the committed files.

pub mod backfill;
pub mod blocks;
pub mod e2e;
pub mod matcher;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::headline::{between, write_between};
use crate::machine::{self as host, now_utc};
use crate::plot::thousands;

/// The benches whose figures this module generates, in the READMEs' order.
pub const KINDS: [&str; 4] = ["matcher", "blocks", "backfill", "e2e"];

/// The run: the first line of a results file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// `<bench>-run`.
    pub bench: String,
    /// When the run started, UTC (`YYYY-MM-DD HH:MM:SS`).
    pub date: String,
    /// The bench's arguments, after its name (`matcher --quick`); empty if not known.
    pub command: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory: String,
    pub loadavg_at_start: String,
    pub tidings_commit: String,
    /// For a file converted from an older bench's output rather than written by the bench: that
    /// output's file name. Such a file holds only what the output stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<String>,
}

/// A run starting now: the run line and the file-name stamp.
pub struct Run {
    pub info: RunInfo,
    stamp: String,
}

impl Run {
    /// Notes the machine, the load and the command as a run of `bench` starts.
    pub fn start(bench: &str) -> Run {
        let (date, stamp) = now_utc();
        Run {
            info: RunInfo {
                bench: format!("{bench}-run"),
                date,
                command: host::command(bench),
                cpu: host::cpu_model(),
                cores: host::cores(),
                kernel: host::kernel(),
                memory: host::memory(),
                loadavg_at_start: host::loadavg(),
                tidings_commit: host::tidings_commit(),
                converted_from: None,
            },
            stamp,
        }
    }

    /// The bench's name (`matcher`).
    fn bench(&self) -> &str {
        self.info
            .bench
            .strip_suffix("-run")
            .unwrap_or(&self.info.bench)
    }

    /// Writes `<out>/results/<bench>-<stamp>.jsonl` (the run line, then `records`); when `out` is
    /// the repository's `bench/`, also rewrites the README sections from the newest files, so a
    /// run leaves its figures where they are read. Prints what it wrote.
    pub fn save<T: Serialize>(&self, out: &Path, records: &[T]) -> Result<PathBuf> {
        let dir = out.join("results");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}-{}.jsonl", self.bench(), self.stamp));
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(&self.info)?)?;
        for r in records {
            writeln!(f, "{}", serde_json::to_string(r)?)?;
        }
        f.flush()?;
        eprintln!("results: {}", path.display());
        if out.canonicalize().ok() == bench_dir().canonicalize().ok() {
            match write(&repo_dir()) {
                Ok(changed) if changed.is_empty() => eprintln!("README figures unchanged"),
                Ok(changed) => eprintln!("rewrote the figures in {}", changed.join(", ")),
                Err(e) => eprintln!(
                    "WARNING: README figures not regenerated ({e:#}); fix or remove {} before \
                     committing it",
                    path.display()
                ),
            }
        }
        Ok(path)
    }
}

/// The bench crate's directory (`bench/`), where results files are kept by default.
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository (the bench crate's parent).
pub fn repo_dir() -> PathBuf {
    bench_dir().join("..")
}

/// Splits a results file into its run line and its lines of `bench` (other lines are skipped).
pub fn parse<T: for<'de> Deserialize<'de>>(text: &str, bench: &str) -> Result<(RunInfo, Vec<T>)> {
    let mut run = None;
    let mut records = Vec::new();
    let run_tag = format!("{bench}-run");
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", n + 1))?;
        let at = || format!("line {}", n + 1);
        match v["bench"].as_str() {
            Some(b) if b == run_tag => run = Some(serde_json::from_value(v).with_context(at)?),
            Some(b) if b == bench => records.push(serde_json::from_value(v).with_context(at)?),
            _ => {}
        }
    }
    let run = run.with_context(|| format!("no {run_tag:?} line"))?;
    if records.is_empty() {
        bail!("no {bench:?} lines");
    }
    Ok((run, records))
}

/// The newest `<bench>-<date>-<time>.jsonl` in `results` (the names sort by time).
pub fn newest(results: &Path, bench: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(results)
        .with_context(|| format!("reading {}", results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(bench)?.strip_prefix('-'))
                .and_then(|rest| rest.strip_suffix(".jsonl"))
                .is_some_and(|stamp| stamp.len() == 15 && stamp.as_bytes()[8] == b'-')
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no {bench}-<date>-<time>.jsonl in {}", results.display()))
}

/// A results file's name.
pub fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

/// Where a generated section starts: `<!-- <name>:begin: … -->`.
pub fn begin(name: &str) -> String {
    format!(
        "<!-- {name}:begin: generated by `cargo run -p tidings-bench --bin figures` from the \
         newest bench/results/{name}-*.jsonl; do not edit -->"
    )
}

/// Where it ends.
pub fn end(name: &str) -> String {
    format!("<!-- {name}:end -->")
}

/// One generated section: which README (relative to the repository), its name, its text.
#[derive(Debug)]
pub struct Section {
    pub readme: &'static str,
    pub name: &'static str,
    pub text: String,
}

/// Every section, generated from the newest results file of each bench in `results`.
pub fn sections(results: &Path) -> Result<Vec<Section>> {
    let read = |bench: &str| -> Result<(PathBuf, String)> {
        let p = newest(results, bench)?;
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok((p, text))
    };
    let mut out = Vec::new();
    let (p, text) = read("matcher")?;
    let (run, rows) =
        parse::<matcher::Row>(&text, "matcher").with_context(|| p.display().to_string())?;
    let m = matcher::Figures::new(&run, &rows, file_name(&p))?;
    out.push(Section {
        readme: "README.md",
        name: "matcher",
        text: m.headline()?,
    });
    out.push(Section {
        readme: "bench/README.md",
        name: "matcher",
        text: m.table(),
    });
    let (p, text) = read("blocks")?;
    let (run, rows) =
        parse::<blocks::Record>(&text, "blocks").with_context(|| p.display().to_string())?;
    let b = blocks::Figures {
        run,
        r: rows[0].clone(),
        file: file_name(&p).to_string(),
    };
    out.push(Section {
        readme: "README.md",
        name: "blocks",
        text: b.headline(),
    });
    out.push(Section {
        readme: "bench/README.md",
        name: "blocks",
        text: b.page(),
    });
    let (p, text) = read("backfill")?;
    let (run, rows) =
        parse::<backfill::Row>(&text, "backfill").with_context(|| p.display().to_string())?;
    let f = backfill::Figures::new(run, rows, file_name(&p))?;
    out.push(Section {
        readme: "README.md",
        name: "backfill",
        text: f.headline(&b),
    });
    out.push(Section {
        readme: "bench/README.md",
        name: "backfill",
        text: f.page(),
    });
    let (p, text) = read("e2e")?;
    let (run, rows) =
        parse::<crate::stats::Record>(&text, "e2e").with_context(|| p.display().to_string())?;
    let e = e2e::Figures::new(run, rows, file_name(&p))?;
    out.push(Section {
        readme: "README.md",
        name: "e2e",
        text: e.headline(),
    });
    out.push(Section {
        readme: "bench/README.md",
        name: "e2e",
        text: e.page(),
    });
    Ok(out)
}

/// What `text` holds between the markers of section `name`, if it has them.
pub fn current<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    between(text, &begin(name), &end(name))
}

/// Rewrites every section of the READMEs under `repo` from the newest results files; returns
/// the sections that changed (`README.md: matcher`).
pub fn write(repo: &Path) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for s in sections(&repo.join("bench/results"))? {
        let readme = repo.join(s.readme);
        let text = std::fs::read_to_string(&readme)
            .with_context(|| format!("reading {}", readme.display()))?;
        if current(&text, s.name) != Some(s.text.as_str()) {
            write_between(&readme, &begin(s.name), &end(s.name), &s.text)?;
            changed.push(format!("{}: {}", s.readme, s.name));
        }
    }
    Ok(changed)
}

/// The sections of the READMEs under `repo` that differ from what the results files generate.
pub fn stale(repo: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for s in sections(&repo.join("bench/results"))? {
        let text = std::fs::read_to_string(repo.join(s.readme))?;
        match current(&text, s.name) {
            None => out.push(format!("{}: no {} markers", s.readme, s.name)),
            Some(t) if t != s.text => out.push(format!(
                "{}: the {} section differs from what its results file generates",
                s.readme, s.name
            )),
            Some(_) => {}
        }
    }
    Ok(out)
}

/// A ratio: one decimal below 100, whole numbers with separators above.
pub fn times(r: f64) -> String {
    if !r.is_finite() {
        "–".into()
    } else if r >= 100.0 {
        format!("{}×", thousands(r))
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Microseconds as milliseconds for prose: `4.1 ms`, `0.42 ms`.
pub fn ms(us: f64) -> String {
    if !us.is_finite() {
        "–".into()
    } else if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// How a run was made, for a bullet: `` `matcher --quick` on `2ac739c` `` (or what the file
/// was converted from).
pub fn provenance(run: &RunInfo) -> String {
    match &run.converted_from {
        Some(orig) => format!("converted from the bench's printed output `{orig}`"),
        None if run.tidings_commit.is_empty() => format!("`{}`", run.command),
        None => format!("`{}` on `{}`", run.command, run.tidings_commit),
    }
}

/// `; <date> UTC, <cpu>, <n> cores, load average at start `…`` for what the run line knows
/// (a converted file knows only its date).
pub fn machine_line(run: &RunInfo) -> String {
    let mut parts = Vec::new();
    if !run.date.is_empty() {
        parts.push(format!("{} UTC", run.date));
    }
    if !run.cpu.is_empty() {
        parts.push(run.cpu.clone());
    }
    if run.cores > 0 {
        parts.push(format!("{} cores", run.cores));
    }
    if !run.loadavg_at_start.is_empty() {
        parts.push(format!("load average at start `{}`", run.loadavg_at_start));
    }
    parts.iter().map(|p| format!("; {p}")).collect()
}
