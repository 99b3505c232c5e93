//! The figures the repository shows come from the results files it holds: `bench/RESULTS.md`
//! and the README's headline comparison are exactly what the newest compare run's JSON lines
//! generate (hand-copied figures once drifted from their run), the subscribers section of
//! bench/README.md is what its newest results file generates, and so are the matcher, blocks,
//! backfill and e2e figures of both READMEs. Nothing here measures: it reads the committed files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use tidings_bench::{figures, headline, report, subscribers};

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

#[test]
fn matcher_blocks_backfill_and_e2e_figures_are_generated_from_their_newest_runs() -> Result<()> {
    let repo = bench_dir().join("..");
    let stale = figures::stale(&repo)?;
    ensure!(
        stale.is_empty(),
        "README figures differ from what bench/results/ generates (a hand edit, or a run \
         committed without its pages): run `cargo run -p tidings-bench --bin figures`\n{}",
        stale.join("\n")
    );
    // Each README bullet names the file it comes from, and that file is the newest of its bench.
    let readme = std::fs::read_to_string(repo.join("README.md"))?;
    for bench in figures::KINDS {
        let shown = figures::current(&readme, bench)
            .with_context(|| format!("README has no {bench} markers"))?;
        let file = newest(bench)?;
        ensure!(
            shown.contains(&format!("bench/results/{}", name(&file))),
            "the README's {bench} figures do not name {}",
            name(&file)
        );
    }
    Ok(())
}

/// A figure edited by hand inside a generated section fails the check above (so the check can
/// fail), and the generator puts it back.
#[test]
fn a_hand_edited_figure_is_caught_and_regenerated() -> Result<()> {
    let repo = bench_dir().join("..");
    let tmp = tempfile::tempdir()?;
    std::fs::create_dir_all(tmp.path().join("bench/results"))?;
    for f in ["README.md", "bench/README.md"] {
        std::fs::copy(repo.join(f), tmp.path().join(f))?;
    }
    for e in std::fs::read_dir(bench_dir().join("results"))? {
        let p = e?.path();
        std::fs::copy(&p, tmp.path().join("bench/results").join(name(&p)))?;
    }
    let readme = tmp.path().join("README.md");
    let text = std::fs::read_to_string(&readme)?;
    let shown = figures::current(&text, "matcher").context("no matcher markers")?;
    // Change the first digit of the section (a figure) to another.
    let at = shown
        .find(|c: char| c.is_ascii_digit())
        .context("no figure in the matcher section")?;
    let mut edited = shown.to_string();
    let d = edited.as_bytes()[at];
    edited.replace_range(at..at + 1, if d == b'9' { "8" } else { "9" });
    std::fs::write(&readme, text.replacen(shown, &edited, 1))?;
    let stale = figures::stale(tmp.path())?;
    ensure!(
        stale == ["README.md: the matcher section differs from what its results file generates"],
        "{stale:?}"
    );
    ensure!(figures::write(tmp.path())? == ["README.md: matcher"]);
    ensure!(std::fs::read_to_string(&readme)? == text, "not restored");
    ensure!(figures::stale(tmp.path())?.is_empty());
    Ok(())
}

/// Every results file is JSON lines whose first line describes the run (or the machine), so the
/// pages can be generated from any of them.
#[test]
fn every_results_file_is_machine_readable() -> Result<()> {
    for e in std::fs::read_dir(bench_dir().join("results"))? {
        let p = e?.path();
        let n = name(&p).to_string();
        if n.ends_with(".svg") {
            continue;
        }
        ensure!(n.ends_with(".jsonl"), "{n}: results are .jsonl files");
        let text = std::fs::read_to_string(&p)?;
        let mut lines = text.lines();
        let first: serde_json::Value =
            serde_json::from_str(lines.next().unwrap_or_default()).with_context(|| n.clone())?;
        let tag = first["bench"].as_str().unwrap_or_default();
        ensure!(
            tag.ends_with("-run") || tag.ends_with("-machine"),
            "{n}: the first line describes no run ({tag:?})"
        );
        for (i, l) in lines.enumerate() {
            serde_json::from_str::<serde_json::Value>(l)
                .with_context(|| format!("{n} line {}", i + 2))?;
        }
    }
    Ok(())
}

/// `bench/ceiling.sh` builds its no-fsync ceiling from `HEAD` with `bench/ceiling/no-fsync.patch`:
/// the patch must still apply to the store's writer, or the script stops before it measures
/// anything. A change to the lines it patches fails here, where it is cheap to see; that the
/// patched tree also compiles is checked by `bench/ceiling.sh --check`, which `scripts/test.sh`
/// runs (a cargo build inside `cargo test` would wait on the lock of the build it runs under).
#[test]
fn the_ceiling_patch_still_applies() -> Result<()> {
    let root = bench_dir().parent().context("bench/ has a parent")?;
    let out = std::process::Command::new("git")
        .args(["apply", "--check", "bench/ceiling/no-fsync.patch"])
        .current_dir(root)
        .output()
        .context("running git apply --check")?;
    ensure!(
        out.status.success(),
        "bench/ceiling/no-fsync.patch no longer applies (update it to the store writer's commit): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `bench/python_publish.py` saves its medians; the Python binding's README and the README quote
/// them by hand (the script is Python, outside the `figures` generator), so this checks that
/// every figure they quote is the newest run's, to the digit.
#[test]
fn the_python_publish_figures_are_those_of_its_newest_run() -> Result<()> {
    let jsonl = newest("python-publish")?;
    let text = std::fs::read_to_string(&jsonl)?;
    let mut rate = std::collections::HashMap::new();
    for line in text.lines().skip(1) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let way = v["way"]
            .as_str()
            .context("a row without its way")?
            .to_string();
        let per_s = v["events_per_s"]
            .as_f64()
            .context("a row without events_per_s")?;
        let ratio = v["vs_one_by_one"]
            .as_f64()
            .context("a row without vs_one_by_one")?;
        rate.insert(
            way,
            (
                tidings_bench::plot::thousands(per_s),
                format!("{ratio:.1}×"),
            ),
        );
    }
    let get = |way: &str| {
        rate.get(way)
            .with_context(|| format!("{}: no row {way:?}", name(&jsonl)))
    };
    let (one, _) = get("publish, one by one")?;
    let (sixteen, sixteen_x) = get("publish_many, in_flight=16")?;
    let (many, many_x) = get("publish_many, in_flight=256")?;
    let root = bench_dir().parent().context("bench/ has a parent")?;
    let binding = std::fs::read_to_string(root.join("bindings/python/README.md"))?;
    for row in [
        format!("| `publish`, one by one | {one} |"),
        format!("| `publish_many(..., in_flight=16)` | {sixteen} ({sixteen_x}) |"),
        format!("| `publish_many(...)` (256 in flight) | {many} ({many_x}) |"),
        format!("About {} a loop of `publish`", many_x.replace(".0×", "×")),
    ] {
        ensure!(
            binding.contains(&row),
            "bindings/python/README.md lacks {row:?} from {}: run python3 bench/python_publish.py and copy its medians",
            name(&jsonl)
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let claim = format!("{many} acknowledged events/s from Python against {one} for a loop");
    ensure!(
        readme.contains(&claim),
        "README.md lacks {claim:?} from {}",
        name(&jsonl)
    );
    Ok(())
}
