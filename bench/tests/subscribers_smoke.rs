//! The many-subscribers bench in its smallest form, against the tidings binary of this build
//! (`target/<profile>/tidings`, which `cargo test --workspace` builds; or `$TIDINGS_BIN`): it
//! runs both phases, finds every subscriber got exactly its events, and writes its results file
//! and README section. Runs in CI in a few seconds.

use std::path::PathBuf;
use std::process::Command;

fn tidings_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDINGS_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_BIN_EXE_subscribers"))
        .with_file_name(format!("tidings{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} not found: build it with `cargo build -p tidings-node` (or --release for a release \
         test run) or set TIDINGS_BIN",
        p.display()
    );
    p
}

#[test]
fn smallest_run_is_exact_and_writes_its_section() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_subscribers"))
        .env("TIDINGS_BIN", tidings_bin())
        .args([
            "--subscribers",
            "40",
            "--events",
            "30",
            "--lanes",
            "2",
            "--grace",
            "20",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("running the subscribers bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{}\n{stdout}\n{stderr}", run.status);
    assert_eq!(stdout.matches("EXACT").count(), 2, "{stdout}");
    assert!(!stdout.contains("NOT EXACT"), "{stdout}");

    let results: Vec<_> = std::fs::read_dir(out.path().join("results"))
        .expect("results dir")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(results.len(), 1);
    let text = std::fs::read_to_string(results[0].path()).expect("results file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["bench"], "subscribers-run");
    for (p, subs) in lines[1..].iter().zip([1, 40]) {
        assert_eq!(p["subscribers"], subs, "{p}");
        assert_eq!(p["published"], 30, "{p}");
        let x = &p["exactness"];
        assert_eq!(x["exact_subscribers"], subs, "{p}");
        assert!(x["expected"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(x["delivered"], x["expected"], "{p}");
        assert!(p["publish_p50_us"].as_f64().unwrap() > 0.0, "{p}");
    }
    // The baseline's one subscriber takes all 30; the 40 filters take about half on average.
    assert_eq!(lines[1]["exactness"]["expected"], 30);
    for f in ["rss_before", "rss_subscribed", "rss_peak"] {
        assert!(lines[2][f].as_u64().unwrap() > 1 << 20, "{f}: {}", lines[2]);
    }
    let readme = std::fs::read_to_string(out.path().join("README.md")).expect("README.md");
    assert!(readme.contains("| subscribers | 40 |"), "{readme}");
    assert!(
        readme.contains("What 40 subscribers cost the publisher"),
        "{readme}"
    );
}
