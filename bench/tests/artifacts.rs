//! The figures the repository shows come from the results files it holds: `bench/RESULTS.md`
//! and the README's headline comparison are exactly what the newest compare run's JSON lines
//! generate (hand-copied figures once drifted from their run), and the subscribers section of
//! bench/README.md is what its newest results file generates.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use tidings_bench::{headline, report, subscribers};

fn bench_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The newest results file named `<prefix>-<date>-<time>.jsonl` (the names sort by time).
fn newest(prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(bench_dir().join("results"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")) && n.ends_with(".jsonl"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no bench/results/{prefix}-*.jsonl"))
}

fn name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

#[test]
fn results_page_and_readme_headline_are_generated_from_the_newest_compare_run() -> Result<()> {
    let jsonl = newest("compare")?;
    let (machine, records) = report::parse(&std::fs::read_to_string(&jsonl)?)?;
    let page = std::fs::read_to_string(bench_dir().join("RESULTS.md"))?;
    ensure!(
        page == report::markdown(machine.as_ref(), &records, name(&jsonl)),
        "bench/RESULTS.md is not what {} generates: run `cargo run -p tidings-bench --bin \
         compare -- --report {}`",
        name(&jsonl),
        jsonl.display()
    );
    let readme = std::fs::read_to_string(bench_dir().join("../README.md"))?;
    let shown = headline::current(&readme).context("README has no headline markers")?;
    ensure!(
        shown == headline::section(&records, name(&jsonl)),
        "the README's headline comparison is not what {} generates: run `cargo run -p \
         tidings-bench --bin compare -- --report {}`",
        name(&jsonl),
        jsonl.display()
    );
    Ok(())
}

#[test]
fn the_subscribers_section_is_generated_from_its_newest_run() -> Result<()> {
    let jsonl = newest("subscribers")?;
    let readme = std::fs::read_to_string(bench_dir().join("README.md"))?;
    let shown = headline::between(&readme, subscribers::BEGIN, subscribers::END)
        .context("bench/README.md has no subscribers markers")?;
    let (run, phases) = subscribers::parse(&std::fs::read_to_string(&jsonl)?)?;
    ensure!(
        shown == subscribers::section(run.as_ref(), &phases, name(&jsonl)),
        "bench/README.md's subscribers section is not what {} generates",
        name(&jsonl)
    );
    Ok(())
}
