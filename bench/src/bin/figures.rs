//! Rewrites the generated figures of README.md and bench/README.md (the `matcher`, `blocks`,
//! `backfill` and `e2e` sections) from the newest results file of each of those benches in
//! bench/results/; measures nothing. `--check` only says which sections differ (exit status 1).
//!
//! `cargo run -p tidings-bench --bin figures [-- --check]`

use anyhow::{Result, bail};
use tidings_bench::figures;

const HELP: &str = "\
usage: figures [--check]

Rewrites the sections of README.md and bench/README.md between the <name>:begin / <name>:end
markers (matcher, blocks, backfill, e2e) from the newest bench/results/<name>-<date>.jsonl, which
the benches write (`cargo run --release -p tidings-bench --bin <name>`). Measures nothing.

  --check   rewrite nothing; list the sections that differ and exit with status 1 if any";

fn main() -> Result<()> {
    let mut check = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    let repo = figures::repo_dir();
    if check {
        let stale = figures::stale(&repo)?;
        for s in &stale {
            println!("{s}");
        }
        if !stale.is_empty() {
            std::process::exit(1);
        }
        println!("every generated section is what its results file generates");
        return Ok(());
    }
    let changed = figures::write(&repo)?;
    if changed.is_empty() {
        println!("every generated section was already up to date");
    }
    for c in changed {
        println!("rewrote {c}");
    }
    Ok(())
}
